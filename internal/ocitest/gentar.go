package ocitest

import (
	"archive/tar"
	"bytes"
	"io"
	"testing"
	"time"

	"github.com/mossfs/mossfs/internal/gentree"
)

// GenTar writes a generated tree (internal/gentree) as a tar layer; with
// changed, every tenth regular file gets other content (an image B that
// shares 90% of A's files).
func GenTar(tb testing.TB, spec gentree.Spec, changed bool) []byte {
	tb.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range gentree.List(spec) {
		h := &tar.Header{Name: f.Path, Mode: int64(f.Mode & 0o7777), ModTime: time.Unix(f.Mtime.Sec, 0), Format: tar.FormatPAX}
		var data io.Reader
		switch f.Mode & 0o170000 {
		case 0o040000:
			h.Typeflag, h.Name = tar.TypeDir, f.Path+"/"
		case 0o120000:
			h.Typeflag, h.Linkname = tar.TypeSymlink, f.Target
		default:
			h.Typeflag, h.Size = tar.TypeReg, f.Size
			src := f
			if changed && f.Index%10 == 0 {
				src.Index += 1 << 30
			}
			data = gentree.ContentReader(src)
		}
		if err := tw.WriteHeader(h); err != nil {
			tb.Fatal(err)
		}
		if data != nil {
			if _, err := io.Copy(tw, data); err != nil {
				tb.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}
