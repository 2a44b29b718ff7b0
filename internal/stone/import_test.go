package stone

import (
	"bytes"
	"context"
	"encoding/hex"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/zeebo/xxh3"

	"github.com/mossfs/mossfs/cas"
	"github.com/mossfs/mossfs/tree"
)

// countingSink counts Puts into a real store.
type countingSink struct {
	*cas.Store
	puts atomic.Int64
}

func (s *countingSink) Put(r io.Reader) ([32]byte, error) {
	s.puts.Add(1)
	return s.Store.Put(r)
}

func (s *countingSink) PutBytes(b []byte) ([32]byte, error) {
	s.puts.Add(1)
	return s.Store.PutBytes(b)
}

func newSink(t testing.TB) *countingSink {
	t.Helper()
	s, err := cas.Create(filepath.Join(t.TempDir(), "store"))
	if err != nil {
		t.Fatal(err)
	}
	return &countingSink{Store: s}
}

// cliDigests runs the fsverity tool once over many files.
func cliDigests(t *testing.T, paths []string) [][]byte {
	t.Helper()
	if len(paths) == 0 {
		return nil
	}
	args := append([]string{"digest", "--compact", "--hash-alg=sha256", "--block-size=4096"}, paths...)
	out, err := exec.Command("fsverity", args...).Output()
	if err != nil {
		t.Fatalf("fsverity digest: %v", err)
	}
	lines := strings.Fields(string(out))
	if len(lines) != len(paths) {
		t.Fatalf("fsverity printed %d digests for %d files", len(lines), len(paths))
	}
	var ds [][]byte
	for _, l := range lines {
		d, err := hex.DecodeString(l)
		if err != nil {
			t.Fatal(err)
		}
		ds = append(ds, d)
	}
	return ds
}

// checkTree compares the imported tree with the package's layout and the
// store's objects: every regular file's object holds content whose XXH3-128
// is the layout digest and whose fs-verity digest (fsverity CLI) is the
// node's.
func checkTree(t *testing.T, p *Package, root *tree.Node, store *cas.Store) {
	t.Helper()
	var objs []string
	var nodes []*tree.Node
	seen := map[string]bool{}
	for _, e := range p.Layout {
		n := root.Lookup(e.Target)
		if n == nil {
			t.Fatalf("%s missing from the tree", e.Target)
		}
		seen[e.Target] = true
		if n.UID != e.UID || n.GID != e.GID || n.Mode != e.Mode || n.Mtime != (tree.Timespec{}) || n.LinkTo != nil {
			t.Errorf("%s: mode %o %d:%d mtime %v, layout %o %d:%d", e.Target, n.Mode, n.UID, n.GID, n.Mtime, e.Mode, e.UID, e.GID)
		}
		switch e.Type {
		case LayoutSymlink:
			if n.Target != e.Source || n.Size != uint64(len(e.Source)) {
				t.Errorf("%s: symlink %q size %d, want %q", e.Target, n.Target, n.Size, e.Source)
			}
		case LayoutRegular:
			if e.Digest == EmptyXXH128 {
				if n.Size != 0 || n.Payload != "" || n.Digest != nil || n.Content != nil {
					t.Errorf("%s: empty file with size %d payload %q", e.Target, n.Size, n.Payload)
				}
				continue
			}
			if n.Payload != cas.Payload([32]byte(n.Digest)) {
				t.Errorf("%s: payload %q for digest %x", e.Target, n.Payload, n.Digest)
				continue
			}
			data, err := os.ReadFile(store.ObjectPath([32]byte(n.Digest)))
			if err != nil {
				t.Errorf("%s: %v", e.Target, err)
				continue
			}
			if XXH128(xxh3.Hash128(data).Bytes()) != e.Digest || uint64(len(data)) != n.Size {
				t.Errorf("%s: object content does not match the layout digest %s (or size %d)", e.Target, e.Digest, n.Size)
			}
			objs = append(objs, store.ObjectPath([32]byte(n.Digest)))
			nodes = append(nodes, n)
		}
	}
	for i, d := range cliDigests(t, objs) {
		if !bytes.Equal(d, nodes[i].Digest) {
			t.Errorf("%s: digest %x, fsverity CLI %x", nodes[i].Path(), nodes[i].Digest, d)
		}
	}
	// Everything else in the tree is an implicit root:root 0755 directory.
	_ = root.Walk(func(n *tree.Node) error {
		rel := strings.TrimPrefix(n.Path(), "/")
		if n.Parent != nil && !seen[rel] && (n.Mode != tree.TypeDir|0o755 || n.UID != 0 || n.GID != 0 || n.Mtime != (tree.Timespec{})) {
			t.Errorf("%s: implicit directory %o %d:%d", rel, n.Mode, n.UID, n.GID)
		}
		return nil
	})
	if root.Mode != tree.TypeDir|0o755 || root.UID != 0 || root.GID != 0 {
		t.Errorf("root %o %d:%d", root.Mode, root.UID, root.GID)
	}
}

func TestImportBashCompletion(t *testing.T) {
	path := filepath.Join(stonesDir(t), "bash-completion-2.11-1-1-x86_64.stone")
	sink := newSink(t)
	knownDir := t.TempDir()
	known, err := NewKnownIndex(knownDir)
	if err != nil {
		t.Fatal(err)
	}
	p, root, err := Import(context.Background(), path, sink, known)
	if err != nil {
		t.Fatal(err)
	}
	if p.ID() != "bash-completion-2.11-1.x86_64" {
		t.Errorf("id %s", p.ID())
	}
	checkTree(t, p, root, sink.Store)
	var regular, symlinks int
	_ = root.Walk(func(n *tree.Node) error {
		switch n.Type() {
		case tree.TypeReg:
			regular++
		case tree.TypeLink:
			symlinks++
		}
		return nil
	})
	if regular != 474 || symlinks != 271 || root.Lookup("share/bash-completion/completions/7za").Target != "7z" {
		t.Errorf("%d regular files, %d symlinks; want 474, 271", regular, symlinks)
	}
	_ = root.Walk(func(n *tree.Node) error {
		if n.IsDir() {
			want := uint32(2)
			for _, c := range n.Children {
				if c.IsDir() {
					want++
				}
			}
			if n.Nlink != want {
				t.Errorf("%s: nlink %d, want %d", n.Path(), n.Nlink, want)
			}
		}
		return nil
	})
	if sink.puts.Load() != 474 || known.Len() != 474 {
		t.Errorf("%d puts, %d known; want 474", sink.puts.Load(), known.Len())
	}
	if err := sink.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := known.Sync(); err != nil {
		t.Fatal(err)
	}
	known.Close()

	// Reopened, the index knows everything: the Content payload is not even
	// read, so a copy with a corrupted Content still imports to the same tree.
	known, err = NewKnownIndex(knownDir)
	if err != nil {
		t.Fatal(err)
	}
	defer known.Close()
	data, _ := os.ReadFile(path)
	hdr, body := payloadSpan(data, 3)
	if data[hdr+30] != byte(KindContent) {
		t.Fatal("payload 3 is not Content")
	}
	body[len(body)/2] ^= 0xff
	bad := filepath.Join(t.TempDir(), "bad.stone")
	if err := os.WriteFile(bad, data, 0o644); err != nil {
		t.Fatal(err)
	}
	sink.puts.Store(0)
	_, root2, err := Import(context.Background(), bad, sink, known)
	if err != nil {
		t.Fatal(err)
	}
	if err := tree.Equal(root, root2); err != nil || sink.puts.Load() != 0 {
		t.Errorf("known import: %v, %d puts", err, sink.puts.Load())
	}
	// Without the index, the corruption is caught before anything is stored.
	sink2 := newSink(t)
	if _, _, err := Import(context.Background(), bad, sink2, nil); err == nil || !strings.Contains(err.Error(), "Content payload checksum mismatch") {
		t.Errorf("corrupted Content: %v", err)
	}
	assertStoreEmpty(t, sink2.Store)

	// An object gone from the store (gc) is stored again, not trusted.
	var gone [32]byte
	copy(gone[:], root.Lookup("share/bash-completion/bash_completion").Digest)
	if err := sink.Remove(gone); err != nil {
		t.Fatal(err)
	}
	sink.puts.Store(0)
	if _, _, err := Import(context.Background(), path, sink, known); err != nil {
		t.Fatal(err)
	}
	if !sink.Has(gone) || sink.puts.Load() != 1 {
		t.Errorf("removed object: has %v after %d puts", sink.Has(gone), sink.puts.Load())
	}
}

func assertStoreEmpty(t *testing.T, s *cas.Store) {
	t.Helper()
	n := 0
	if err := s.Walk(func([32]byte, int64) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("store holds %d objects", n)
	}
}

// assertStoreSound checks that every object in the store is intact.
func assertStoreSound(t *testing.T, s *cas.Store) {
	t.Helper()
	err := s.Walk(func(d [32]byte, _ int64) error { return s.Verify(d) })
	if err != nil {
		t.Errorf("store: %v", err)
	}
}

func TestImportEmptyFiles(t *testing.T) {
	sink := newSink(t)
	for _, name := range []string{"italian-pizza-1-1-1-x86_64.stone", "pineapple-1-1-1-x86_64.stone"} {
		p, root, err := Import(context.Background(), filepath.Join(stonesDir(t), name), sink, nil)
		if err != nil {
			t.Fatal(err)
		}
		checkTree(t, p, root, sink.Store)
		target := "share/defaults/" + strings.TrimSuffix(strings.TrimSuffix(name, "-1-1-1-x86_64.stone"), "-")
		if name == "pineapple-1-1-1-x86_64.stone" {
			target = "share/defaults/pienapple" // sic
		}
		if n := root.Lookup(target); n == nil || n.Type() != tree.TypeReg || n.Size != 0 || n.Mode != 0o100644 {
			t.Errorf("%s: %s is %+v", name, target, n)
		}
	}
	if sink.puts.Load() != 0 {
		t.Errorf("%d puts for empty files", sink.puts.Load())
	}
	assertStoreEmpty(t, sink.Store)
}

func TestImportWithoutSink(t *testing.T) {
	path := filepath.Join(stonesDir(t), "bash-completion-2.11-1-1-x86_64.stone")
	sink := newSink(t)
	_, a, err := Import(context.Background(), path, sink, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, b, err := Import(context.Background(), path, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := tree.Equal(a, b); err != nil {
		t.Fatal(err)
	}
}

func TestImportRefusesNonPackages(t *testing.T) {
	for _, name := range []string{"manifests/nano.manifest.x86_64.bin", "expected.json", "does-not-exist.stone"} {
		_, _, err := Import(context.Background(), filepath.Join(stonesDir(t), name), nil, nil)
		if err == nil || !strings.Contains(err.Error(), filepath.Base(name)) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestKnownIndexTornTail(t *testing.T) {
	dir := t.TempDir()
	k, err := NewKnownIndex(dir)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := k.Record([16]byte{byte(i)}, [32]byte{byte(i), 1}); err != nil {
			t.Fatal(err)
		}
	}
	k.Close()
	p := filepath.Join(dir, KnownIndexFile)
	data, _ := os.ReadFile(p)
	// Tear the last record and damage nothing else.
	if err := os.WriteFile(p, data[:len(data)-10], 0o644); err != nil {
		t.Fatal(err)
	}
	k, err = NewKnownIndex(dir)
	if err != nil {
		t.Fatal(err)
	}
	if k.Len() != 2 {
		t.Errorf("%d records after a torn tail, want 2", k.Len())
	}
	if err := k.Record([16]byte{9}, [32]byte{9}); err != nil {
		t.Fatal(err)
	}
	k.Close()
	k, err = NewKnownIndex(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	if d, ok := k.Lookup([16]byte{9}); k.Len() != 3 || !ok || d != [32]byte{9} {
		t.Errorf("after appending past a cut tail: %d records, %v", k.Len(), ok)
	}
	if d, ok := k.Lookup([16]byte{1}); !ok || d != [32]byte{1, 1} {
		t.Errorf("lookup 1: %x %v", d, ok)
	}
	// A file that is not an index is refused, not overwritten.
	other := t.TempDir()
	if err := os.WriteFile(filepath.Join(other, KnownIndexFile), []byte("something else entirely"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := NewKnownIndex(other); err == nil {
		t.Error("foreign file accepted as a known-content index")
	}
}
