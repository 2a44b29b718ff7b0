package oci

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestWriteback: pieces of all sizes across several writeback chunks come
// out as written; sync reports a failure with the file's name.
func TestWriteback(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "blob"))
	if err != nil {
		t.Fatal(err)
	}
	w := newWriteback(f)
	want := make([]byte, 3*writebackChunk+12345)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range want {
		want[i] = byte(r.Uint32())
	}
	for p := want; len(p) > 0; {
		n := min(len(p), 1+r.IntN(3<<20))
		if k, err := w.Write(p[:n]); k != n || err != nil {
			t.Fatalf("Write: %d, %v", k, err)
		}
		p = p[n:]
	}
	if w.started == 0 || w.off-w.started >= writebackChunk {
		t.Errorf("writeback started at %d of %d bytes: not asked for as the chunks filled", w.started, w.off)
	}
	if err := w.sync(); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(f.Name())
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("file differs from what was written (%d bytes, %v)", len(got), err)
	}
	f.Close()
	if err := w.sync(); err == nil || !strings.Contains(err.Error(), f.Name()) {
		t.Errorf("sync of a closed file: %v, want an error naming %s", err, f.Name())
	}
}
