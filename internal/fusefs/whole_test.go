package fusefs

import (
	"bytes"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/mossfs/mossfs/fsverity"
	"github.com/mossfs/mossfs/internal/testenv"
	"github.com/mossfs/mossfs/overlay/overlaytest"
	"github.com/mossfs/mossfs/tree"
)

// The first read of a small file that reaches the daemon reads and checks
// the object whole and hands the rest of the file to the page cache: the
// reader's later reads of it ask the daemon nothing. A corrupted object
// answers EIO wherever it is read, and nothing of it is stored.
func TestWholeReadStoresTheRest(t *testing.T) {
	testenv.RequireMountNS(t)
	objects := t.TempDir()
	root := &tree.Node{Mode: tree.TypeDir | 0o755, Nlink: 2}
	content := map[string][]byte{}
	for _, name := range []string{"good", "bad"} {
		c := overlaytest.Content("w", "/"+name, 300<<10)
		sum := fsverity.Sum(c)
		n := &tree.Node{Name: name, Mode: tree.TypeReg | 0o644, Nlink: 1, Size: uint64(len(c)), Digest: sum[:],
			Payload: hex.EncodeToString(sum[:1]) + "/" + hex.EncodeToString(sum[1:])}
		root.AddChild(n)
		obj := filepath.Join(objects, n.Payload)
		if err := os.MkdirAll(filepath.Dir(obj), 0o755); err != nil {
			t.Fatal(err)
		}
		if name == "bad" {
			c = bytes.Clone(c)
			c[250<<10] ^= 1 // far beyond the first read
		}
		if err := os.WriteFile(obj, c, 0o644); err != nil {
			t.Fatal(err)
		}
		content[name] = c
	}
	root.Sort()
	src, err := NewTreeSource(root)
	if err != nil {
		t.Fatal(err)
	}
	s := mountOpts(t, Options{Source: src, Objects: objects})
	if !s.fs.noOpen {
		t.Skip("the kernel has no FUSE no-open support: reads go through handles")
	}
	f, err := os.Open(filepath.Join(s.Target(), "good"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	head := make([]byte, 4096)
	if _, err := f.ReadAt(head, 0); err != nil || !bytes.Equal(head, content["good"][:4096]) {
		t.Fatalf("good: first 4 KiB: %v", err)
	}
	// The rest is stored once the answer has been sent, just after the
	// read returned.
	for deadline := time.Now().Add(10 * time.Second); s.fs.stores.Load() == 0 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	if s.fs.reads.Load() == 0 || s.fs.stores.Load() == 0 {
		t.Fatalf("good: %d reads, %d stores after the first read; want both", s.fs.reads.Load(), s.fs.stores.Load())
	}
	before := s.fs.reads.Load()
	got, err := os.ReadFile(filepath.Join(s.Target(), "good"))
	if err != nil || !bytes.Equal(got, content["good"]) {
		t.Fatalf("good: %v (content equal: %v)", err, bytes.Equal(got, content["good"]))
	}
	if n := s.fs.reads.Load() - before; n != 0 {
		t.Errorf("good: reading the rest sent %d READ requests, want 0 (stored after the first read)", n)
	}

	bad, err := os.Open(filepath.Join(s.Target(), "bad"))
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	if _, err := bad.ReadAt(head, 0); !errors.Is(err, syscall.EIO) {
		t.Errorf("bad: first 4 KiB (the corruption is at 250 KiB): %v, want EIO", err)
	}
	if _, err := bad.ReadAt(head, 250<<10); !errors.Is(err, syscall.EIO) {
		t.Errorf("bad: at 250 KiB: %v, want EIO", err)
	}
}
