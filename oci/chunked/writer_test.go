package chunked

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/vbatts/tar-split/tar/asm"
	"github.com/vbatts/tar-split/tar/storage"
)

// tfile is one entry of a generated test layer.
type tfile struct {
	name, link string
	typ        byte
	data       []byte
	xattrs     map[string]string
}

// testLayer is a zstd:chunked blob written the way containers/storage lays
// it out (one zstd frame per file content, chunks of large files in frames of
// their own, TOC, tar-split and footer in skippable frames), written here from
// the format description so the reader is tested against an independent
// writer; the end-to-end test uses blobs containers/image wrote.
type testLayer struct {
	tar         []byte
	blob        []byte
	annotations map[string]string
	diffID      string
	toc         TOC
}

func (l *testLayer) desc() Descriptor {
	d := sha256.Sum256(l.blob)
	return Descriptor{Digest: fmt.Sprintf("sha256:%x", d), Size: int64(len(l.blob)), Annotations: l.annotations, DiffID: l.diffID}
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

func makeTar(t testing.TB, files []tfile) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		h := &tar.Header{Name: f.name, Linkname: f.link, Typeflag: f.typ, Mode: 0o644, Format: tar.FormatPAX}
		if f.typ == tar.TypeDir {
			h.Mode = 0o755
		}
		if f.typ == tar.TypeReg {
			h.Size = int64(len(f.data))
		}
		for k, v := range f.xattrs {
			if h.PAXRecords == nil {
				h.PAXRecords = map[string]string{}
			}
			h.PAXRecords["SCHILY.xattr."+k] = v
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(f.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// chunkAt is where writeChunked splits files larger than it into two chunks.
const chunkAt = 40000

func writeChunked(t testing.TB, files []tfile) *testLayer {
	tb := makeTar(t, files)
	var ts bytes.Buffer
	its, err := asm.NewInputTarStream(bytes.NewReader(tb), storage.NewJSONPacker(&ts), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(io.Discard, its); err != nil {
		t.Fatal(err)
	}
	enc, _ := zstd.NewWriter(nil)
	var blob []byte
	frame := func(b []byte) (int64, int64) {
		off := int64(len(blob))
		blob = enc.EncodeAll(b, blob)
		return off, int64(len(blob))
	}
	cr := &countingReader{r: bytes.NewReader(tb)}
	tr := tar.NewReader(cr)
	var toc TOC
	toc.Version = 1
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
		frame(tb[prev:start])
		e := Entry{Name: h.Name, Linkname: h.Linkname, Mode: h.Mode, Size: h.Size}
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
		data := tb[start : start+h.Size]
		prev = start + h.Size
		if e.Type != TypeReg || h.Size == 0 {
			toc.Entries = append(toc.Entries, e)
			continue
		}
		e.Digest = fmt.Sprintf("sha256:%x", sha256.Sum256(data))
		if h.Size <= chunkAt {
			e.Offset, e.EndOffset = frame(data)
			toc.Entries = append(toc.Entries, e)
			continue
		}
		o1, _ := frame(data[:chunkAt])
		o2, end := frame(data[chunkAt:])
		e.Offset, e.EndOffset, e.ChunkSize = o1, end, chunkAt
		e.ChunkDigest = fmt.Sprintf("sha256:%x", sha256.Sum256(data[:chunkAt]))
		toc.Entries = append(toc.Entries, e, Entry{Type: TypeChunk, Name: h.Name, Offset: o2, ChunkOffset: chunkAt,
			ChunkSize: h.Size - chunkAt, ChunkDigest: fmt.Sprintf("sha256:%x", sha256.Sum256(data[chunkAt:]))})
	}
	frame(tb[prev:])
	tsZ := enc.EncodeAll(ts.Bytes(), nil)
	toc.TarSplitDigest = fmt.Sprintf("sha256:%x", sha256.Sum256(tsZ))
	return finishChunked(t, tb, blob, toc, ts.Len(), tsZ)
}

// finishChunked appends TOC, tar-split and footer and computes annotations.
func finishChunked(t testing.TB, tb, blob []byte, toc TOC, tsLen int, tsZ []byte) *testLayer {
	js, err := json.Marshal(toc)
	if err != nil {
		t.Fatal(err)
	}
	enc, _ := zstd.NewWriter(nil)
	tocZ := enc.EncodeAll(js, nil)
	skippable := func(b []byte) int64 {
		blob = append(blob, skippableMagic...)
		blob = binary.LittleEndian.AppendUint32(blob, uint32(len(b)))
		off := int64(len(blob))
		blob = append(blob, b...)
		return off
	}
	tocOff := skippable(tocZ)
	tsOff := skippable(tsZ)
	var f []byte
	for _, v := range []int64{tocOff, int64(len(tocZ)), int64(len(js)), 1, tsOff, int64(len(tsZ)), int64(tsLen)} {
		f = binary.LittleEndian.AppendUint64(f, uint64(v))
	}
	skippable(append(f, footerMagic...))
	return &testLayer{
		tar:  tb,
		blob: blob,
		annotations: map[string]string{
			AnnotationTOCChecksum:      fmt.Sprintf("sha256:%x", sha256.Sum256(tocZ)),
			AnnotationTOCPosition:      fmt.Sprintf("%d:%d:%d:1", tocOff, len(tocZ), len(js)),
			AnnotationTarSplitPosition: fmt.Sprintf("%d:%d:%d", tsOff, len(tsZ), tsLen),
		},
		diffID: fmt.Sprintf("sha256:%x", sha256.Sum256(tb)),
		toc:    toc,
	}
}
