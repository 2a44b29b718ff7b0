package fusefs

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
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

// The first read of a file reads and checks the next files of its
// directory in the background and hands them to the page cache, so that
// reading them asks the daemon nothing; a corrupted one among them is not
// kept, and its own read answers EIO.
func TestPrefetchAfterRead(t *testing.T) {
	testenv.RequireMountNS(t)
	objects := t.TempDir()
	root := &tree.Node{Mode: tree.TypeDir | 0o755, Nlink: 2}
	d := &tree.Node{Name: "d", Mode: tree.TypeDir | 0o755, Nlink: 2}
	root.AddChild(d)
	content := map[string][]byte{}
	const bad = "f05"
	var badObj string
	for i := range 12 {
		name := fmt.Sprintf("f%02d", i)
		c := overlaytest.Content("p", "/d/"+name, 3000+i)
		sum := fsverity.Sum(c)
		n := &tree.Node{Name: name, Mode: tree.TypeReg | 0o644, Nlink: 1, Size: uint64(len(c)), Digest: sum[:],
			Payload: hex.EncodeToString(sum[:1]) + "/" + hex.EncodeToString(sum[1:])}
		d.AddChild(n)
		obj := filepath.Join(objects, n.Payload)
		if err := os.MkdirAll(filepath.Dir(obj), 0o755); err != nil {
			t.Fatal(err)
		}
		if name == bad {
			badObj = obj
			c = bytes.Clone(c)
			c[10] ^= 1
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
	dir := filepath.Join(s.Target(), "d")
	// As tar does: list, then read. The listing gives the kernel the
	// files' inodes, which a store into their page cache needs.
	if _, err := os.ReadDir(dir); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(filepath.Join(dir, "f00")); err != nil || !bytes.Equal(got, content["f00"]) {
		t.Fatalf("f00: %v", err)
	}
	id := func(name string) uint64 {
		var st syscall.Stat_t
		if err := syscall.Lstat(filepath.Join(dir, name), &st); err != nil {
			t.Fatal(err)
		}
		return nodeID(s.fs.current(), st.Ino)
	}
	prefetched := func(id uint64) bool {
		_, stored := s.fs.stored.Load(id)
		return stored || s.fs.objs.has(id)
	}
	for _, name := range []string{"f01", "f04", "f06", "f11"} {
		deadline := time.Now().Add(10 * time.Second)
		for !prefetched(id(name)) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not opened in the background after the read of f00", name)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	time.Sleep(100 * time.Millisecond)
	if prefetched(id(bad)) {
		t.Errorf("%s: a corrupted object was kept open or stored", bad)
	}
	stored := 0
	for name, want := range content {
		_, isStored := s.fs.stored.Load(id(name))
		before := s.fs.reads.Load()
		got, err := os.ReadFile(filepath.Join(dir, name))
		if isStored {
			stored++
			if n := s.fs.reads.Load() - before; n != 0 {
				t.Errorf("%s: stored in the page cache, yet reading it sent %d READ requests", name, n)
			}
		}
		if name == bad {
			if !errors.Is(err, syscall.EIO) {
				t.Errorf("%s (%s corrupted): %v, want EIO", name, badObj, err)
			}
			continue
		}
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: %v (content equal: %v)", name, err, bytes.Equal(got, want))
		}
	}
	if stored == 0 {
		t.Errorf("no prefetched file was handed to the page cache (%d stores)", s.fs.stores.Load())
	}
}

// Directories are opened without OPENDIR where the kernel allows it, and
// their listings stay cached: listing again asks the daemon nothing.
func TestNoOpenDirKeepsListingsCached(t *testing.T) {
	testenv.RequireMountNS(t)
	tx, src, objects := sampleSource(t, "a")
	s := mountOpts(t, Options{Source: src, Objects: objects})
	if !s.fs.noOpenDir {
		t.Skip("the kernel does not offer FUSE no-opendir")
	}
	overlaytest.Compare(t, s.Target(), tx)
	for _, d := range []string{"", "etc", "usr/share/doc/pkg"} {
		p := filepath.Join(s.Target(), d)
		first, err := os.ReadDir(p)
		if err != nil {
			t.Fatal(err)
		}
		before := s.fs.dirReads.Load()
		again, err := os.ReadDir(p)
		if err != nil {
			t.Fatal(err)
		}
		if n := s.fs.dirReads.Load() - before; n != 0 {
			t.Errorf("/%s: listing it again sent %d READDIR requests, want 0 (cached)", d, n)
		}
		if len(again) != len(first) || len(first) == 0 {
			t.Errorf("/%s: %d entries, then %d", d, len(first), len(again))
		}
	}
}
