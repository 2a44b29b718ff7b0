package chunked

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"strings"
	"testing"
)

// memBlob is a RangeReader over bytes in memory.
type memBlob []byte

func (b memBlob) ReadRanges(_ context.Context, rs []Range, fn func(Range, io.Reader) error) error {
	for _, r := range rs {
		if r.Off < 0 || r.Len <= 0 || r.End() > int64(len(b)) {
			return io.ErrUnexpectedEOF
		}
		if err := fn(r, bytes.NewReader(b[r.Off:r.End()])); err != nil {
			return err
		}
	}
	return nil
}

func FuzzParseTOC(f *testing.F) {
	tl := writeChunked(f, sampleFiles())
	js, _ := json.Marshal(tl.toc)
	f.Add(js, int64(len(tl.blob)), false)
	f.Add([]byte(`{"version":1,"entries":[{"type":"reg","name":"x","size":3,"digest":"sha256:`+strings.Repeat("b", 64)+`","offset":4}]}`), int64(100), true)
	f.Fuzz(func(t *testing.T, data []byte, contentEnd int64, estargz bool) {
		toc, err := ParseTOC(data, Limits{ContentEnd: contentEnd, MaxEntries: 10000, Estargz: estargz})
		if err != nil {
			return
		}
		for _, e := range toc.Entries {
			if strings.HasPrefix(e.Clean, "/") || e.Clean == ".." || strings.HasPrefix(e.Clean, "../") {
				t.Fatalf("name %q accepted as %q", e.Name, e.Clean)
			}
			if e.Type == TypeReg && e.Size > 0 && (e.Offset < 0 || e.EndOffset <= e.Offset || e.EndOffset > contentEnd) {
				t.Fatalf("file %q range [%d,%d) accepted outside [0,%d)", e.Name, e.Offset, e.EndOffset, contentEnd)
			}
		}
	})
}

func FuzzLayout(f *testing.F) {
	tl := writeChunked(f, sampleFiles())
	a := tl.annotations
	f.Add(a[AnnotationTOCChecksum], a[AnnotationTOCPosition], a[AnnotationTarSplitPosition], tl.blob[len(tl.blob)-FooterSize:], int64(len(tl.blob)))
	f.Fuzz(func(t *testing.T, sum, pos, ts string, footer []byte, size int64) {
		l, err := LayoutOf(map[string]string{AnnotationTOCChecksum: sum, AnnotationTOCPosition: pos, AnnotationTarSplitPosition: ts}, size)
		if err == nil {
			for _, p := range []Position{l.TOC, l.TarSplit} {
				if p != (Position{}) && (p.Offset < 0 || p.Offset+p.Length > size || p.Uncompressed > MaxMetadataSize) {
					t.Fatalf("position %+v accepted in a blob of %d bytes", p, size)
				}
			}
		}
		if ft, err := ParseFooter(footer, size); err == nil && ft.TOC.Offset+ft.TOC.Length > size {
			t.Fatalf("footer TOC %+v accepted in a blob of %d bytes", ft.TOC, size)
		}
	})
}

func FuzzEstargzTOC(f *testing.F) {
	f.Add([]byte{0x1f, 0x8b, 8, 4, 0, 0, 0, 0, 0, 0xff, 26, 0, 'S', 'G', 22, 0}, []byte{0x1f, 0x8b}, int64(1000))
	f.Fuzz(func(t *testing.T, footer, member []byte, size int64) {
		if off, err := ParseEstargzFooter(footer, size); err == nil && (off < 0 || off >= size) {
			t.Fatalf("TOC offset %d accepted in a blob of %d bytes", off, size)
		}
		if js, err := ExtractEstargzTOC(member); err == nil && len(js) > MaxMetadataSize {
			t.Fatalf("TOC of %d bytes accepted", len(js))
		}
	})
}

// FuzzPrepareTOC runs the whole partial pull on a layer whose TOC the fuzzer
// rewrites (its annotation digest recomputed, so the TOC gets past that
// check): whatever the TOC says, the pull never panics, and a tar stream
// that reads to the end without error is the original layer.
func FuzzPrepareTOC(f *testing.F) {
	files := sampleFiles()[:8]
	tl := writeChunked(f, files)
	d := tl.desc()
	lay, _ := LayoutOf(d.Annotations, d.Size)
	content := tl.blob[:lay.TOC.Offset-skippableHeader]
	tsZ := tl.blob[lay.TarSplit.Offset : lay.TarSplit.Offset+lay.TarSplit.Length]
	js, _ := json.Marshal(tl.toc)
	f.Add(js, true)
	f.Fuzz(func(t *testing.T, tocJSON []byte, half bool) {
		var toc TOC
		if json.Unmarshal(tocJSON, &toc) != nil {
			return
		}
		nl := finishChunked(t, tl.tar, bytes.Clone(content), toc, int(lay.TarSplit.Uncompressed), tsZ)
		store := memStore{}
		for i, fl := range files {
			if half && i%2 == 0 && fl.typ == tar.TypeReg && len(fl.data) > 0 {
				store.add(fl.data)
			}
		}
		l, err := Prepare(context.Background(), memBlob(nl.blob), nl.desc(), store, Options{TempDir: t.TempDir(), MaxEntries: 1000})
		if err != nil {
			return
		}
		defer l.Close()
		rc := l.Tar()
		got, err := io.ReadAll(rc)
		rc.Close()
		if err == nil && !bytes.Equal(got, tl.tar) {
			t.Fatalf("a rebuilt stream that differs from the layer passed")
		}
	})
}
