package chunked

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"testing"
)

// writeEstargz lays a tar out as eStargz does: every file's content in gzip
// members of its own (large files in two chunks), headers in the members
// between, the TOC as stargz.index.json in a last member, and the 51-byte
// footer pointing at it.
func writeEstargz(t *testing.T, files []tfile) (*testLayer, map[string][]byte) {
	tb := makeTar(t, files)
	var blob bytes.Buffer
	member := func(b []byte) int64 {
		off := int64(blob.Len())
		zw := gzip.NewWriter(&blob)
		zw.Write(b)
		zw.Close()
		return off
	}
	cr := &countingReader{r: bytes.NewReader(tb)}
	tr := tar.NewReader(cr)
	toc := TOC{Version: 1}
	contents := map[string][]byte{}
	var prev int64
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		start := cr.n
		member(tb[prev:start])
		data := tb[start : start+h.Size]
		prev = start + h.Size
		e := Entry{Name: h.Name, Linkname: h.Linkname, Mode: h.Mode, Size: h.Size, Xattrs: map[string]string{}}
		for k, v := range h.PAXRecords {
			if name, ok := cutPrefix(k, "SCHILY.xattr."); ok {
				e.Xattrs[name] = b64(v)
			}
		}
		switch h.Typeflag {
		case tar.TypeReg:
			e.Type = TypeReg
		case tar.TypeDir:
			e.Type = TypeDir
		case tar.TypeSymlink:
			e.Type = TypeSymlink
		case tar.TypeLink:
			e.Type, e.Size = TypeHardlink, 0
		}
		if e.Type != TypeReg || h.Size == 0 {
			toc.Entries = append(toc.Entries, e)
			continue
		}
		contents[h.Name] = data
		e.Digest = fmt.Sprintf("sha256:%x", sha256.Sum256(data))
		if h.Size <= chunkAt {
			e.Offset = member(data)
			toc.Entries = append(toc.Entries, e)
			continue
		}
		e.Offset, e.ChunkSize = member(data[:chunkAt]), chunkAt
		o2 := member(data[chunkAt:])
		toc.Entries = append(toc.Entries, e, Entry{Type: TypeChunk, Name: h.Name, Offset: o2, ChunkOffset: chunkAt, ChunkSize: h.Size - chunkAt})
	}
	member(tb[prev:])
	js, _ := json.Marshal(toc)
	var tocTar bytes.Buffer
	tw := tar.NewWriter(&tocTar)
	tw.WriteHeader(&tar.Header{Name: estargzTOCName, Typeflag: tar.TypeReg, Size: int64(len(js)), Mode: 0o444})
	tw.Write(js)
	tw.Close()
	tocOff := member(tocTar.Bytes())
	zw, _ := gzip.NewWriterLevel(&blob, gzip.NoCompression)
	zw.Header.Extra = append([]byte{'S', 'G', 22, 0}, fmt.Sprintf("%016xSTARGZ", tocOff)...)
	zw.Close()
	return &testLayer{tar: tb, blob: blob.Bytes(), annotations: map[string]string{
		AnnotationEstargzTOCDigest: fmt.Sprintf("sha256:%x", sha256.Sum256(js)),
	}, diffID: fmt.Sprintf("sha256:%x", sha256.Sum256(tb))}, contents
}

func cutPrefix(s, p string) (string, bool) {
	if len(s) >= len(p) && s[:len(p)] == p {
		return s[len(p):], true
	}
	return "", false
}

func b64(s string) string {
	b, _ := json.Marshal([]byte(s))
	var out string
	json.Unmarshal(b, &out)
	return out
}

// TestEstargzUnverified: an eStargz layer is pulled partially only with
// AllowUnverified; the synthesized tar then has the layer's entries, with
// fetched and stored contents alike.
func TestEstargzUnverified(t *testing.T) {
	files := sampleFiles()
	tl, contents := writeEstargz(t, files)
	if len(tl.blob) < estargzFooterSize {
		t.Fatal("short blob")
	}
	d := tl.desc()
	store := memStore{}
	for i, f := range files {
		if f.typ == tar.TypeReg && len(f.data) > 0 && i%3 == 0 {
			store.add(f.data)
		}
	}
	if _, err := Prepare(context.Background(), memBlob(tl.blob), d, store, Options{TempDir: t.TempDir()}); !errors.Is(err, ErrFallback) {
		t.Fatalf("without AllowUnverified: %v, want ErrFallback", err)
	}
	l, err := Prepare(context.Background(), memBlob(tl.blob), d, store, Options{TempDir: t.TempDir(), AllowUnverified: true})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if l.Verified() {
		t.Error("an eStargz layer claims a verified tar stream")
	}
	st := l.Stats()
	if st.Format != Estargz || st.Present == 0 || st.Fetched == 0 || st.Present+st.Fetched != st.Files {
		t.Errorf("stats %+v", st)
	}
	rc := l.Tar()
	defer rc.Close()
	tr := tar.NewReader(rc)
	seen := 0
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag != tar.TypeReg || h.Size == 0 {
			continue
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b, contents[h.Name]) {
			t.Errorf("%s: content differs", h.Name)
		}
		if h.Name == "./usr/cap" && h.PAXRecords["SCHILY.xattr.security.capability"] != "\x01\x00\x00\x02" {
			t.Errorf("xattr lost: %q", h.PAXRecords)
		}
		seen++
	}
	if seen != len(contents) {
		t.Errorf("synthesized tar has %d files with content, the layer %d", seen, len(contents))
	}
	// A wrong TOC digest is refused.
	d.Annotations = map[string]string{AnnotationEstargzTOCDigest: "sha256:" + fmt.Sprintf("%064x", 7)}
	if _, err := Prepare(context.Background(), memBlob(tl.blob), d, store, Options{TempDir: t.TempDir(), AllowUnverified: true}); err == nil || errors.Is(err, ErrFallback) {
		t.Fatalf("wrong TOC digest: %v", err)
	}
}
