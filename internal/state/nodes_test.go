package state

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/mossfs/mossfs/internal/nodefile"
	"github.com/mossfs/mossfs/internal/stone"
	"github.com/mossfs/mossfs/tree"
)

// nodeFiles lists the node files of a transaction's inputs that exist.
func nodeFiles(t *testing.T, s *State, tx *Transaction) []string {
	t.Helper()
	var out []string
	for _, in := range tx.Inputs {
		if p := s.NodesPath(tx, in); p != "" {
			if _, err := os.Stat(p); err == nil {
				out = append(out, p)
			}
		}
	}
	return out
}

// TestComposeFromNodeFiles: a compose loads its base's inputs from their
// node files and makes the image a compose that parses the fragments'
// text makes (a store from before node files: the same state root with the
// node files deleted), byte for byte, for an added input and for a removed
// one; such a compose gives its transaction node files, made from the text;
// a damaged node file is passed over for the text.
func TestComposeFromNodeFiles(t *testing.T) {
	s := newState(t)
	when := time.Unix(1_700_000_000, 0)
	a := frag(t, s, pkg("alpha", "1-1-1"), file{path: "bin/alpha", mode: tree.TypeReg | 0o755, content: big("alpha")},
		file{path: "share/alpha/README", content: "read me"}, file{path: "bin/a", target: "alpha"},
		file{path: "share/alpha/empty"}, file{path: "lib/alpha", mode: tree.TypeDir | 0o700})
	// A hardlink, an xattr and a device.
	bin := a.Root.Lookup("bin")
	bin.AddChild(&tree.Node{Name: "alpha2", LinkTo: bin.Lookup("alpha")})
	bin.Lookup("alpha").Nlink = 2
	bin.Lookup("alpha").SetXattr("user.origin", []byte("test"))
	a.Root.Lookup("share").AddChild(&tree.Node{Name: "null", Mode: tree.TypeChar | 0o666, Nlink: 1, Rdev: 0x103})
	a.Root.Sort()
	b := frag(t, s, Input{Kind: KindTree, Name: "/srv/b", Prefix: "/opt/b"}, file{path: "opt/b/data", content: big("bee")})
	base := compose(t, s, ComposeOptions{Add: []Fragment{a, b}, Time: when})
	if got := nodeFiles(t, s, base); len(got) != 2 {
		t.Fatalf("base has node files %v, want one per input", got)
	}
	// Each node file holds the tree its fragment's text gives.
	for _, in := range base.Inputs {
		data, text, err := s.loadFragment(base, in, true)
		if err != nil || data == nil {
			t.Fatal(err)
		}
		text.Sort()
		got := s.loadNodes(base, in)
		if got == nil {
			t.Fatalf("input %s: node file not loaded", in.Label())
		}
		if err := tree.Equal(text, got); err != nil {
			t.Fatalf("input %s: node file vs text: %v", in.Label(), err)
		}
	}

	// The same store as it was before node files.
	oldRoot := filepath.Join(t.TempDir(), "old")
	if out, err := exec.Command("cp", "-a", s.Root(), oldRoot).CombinedOutput(); err != nil {
		t.Fatalf("cp -a: %v\n%s", err, out)
	}
	old, err := Open(oldRoot)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range nodeFiles(t, old, base) {
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
	}
	if got := nodeFiles(t, old, base); len(got) != 0 {
		t.Fatalf("node files left: %v", got)
	}

	c := func(s *State) Fragment {
		return frag(t, s, Input{Kind: KindTree, Name: "/srv/c", Prefix: "/opt/c"}, file{path: "opt/c/new", content: "new"})
	}
	for i, opts := range []func(s *State) ComposeOptions{
		func(s *State) ComposeOptions { return ComposeOptions{From: base.ID, Add: []Fragment{c(s)}} },
		func(s *State) ComposeOptions { return ComposeOptions{From: base.ID, Remove: []string{"alpha"}} },
		func(s *State) ComposeOptions { return ComposeOptions{From: base.ID, Force: true} },
	} {
		id := uint64(10 + i)
		o := opts(s)
		o.ID, o.Time = id, when
		fast := compose(t, s, o)
		o = opts(old)
		o.ID, o.Time = id, when
		slow := compose(t, old, o)
		if fast.Image != slow.Image {
			t.Errorf("compose %d: image %s from node files, %s from the fragments' text", i, fast.Image, slow.Image)
		}
		// Both give the new transaction a node file per input, the same.
		fn, sn := nodeFiles(t, s, fast), nodeFiles(t, old, slow)
		if len(fn) != len(fast.Inputs) || len(sn) != len(slow.Inputs) {
			t.Fatalf("compose %d: node files %v and %v, want %d", i, fn, sn, len(fast.Inputs))
		}
		for j := range fn {
			x, _ := os.ReadFile(fn[j])
			y, _ := os.ReadFile(sn[j])
			if string(x) != string(y) {
				t.Errorf("compose %d: node file %s differs between the two stores", i, filepath.Base(fn[j]))
			}
		}
		// Carried over, a node file is a hardlink of the base's.
		if i == 0 {
			x, _ := os.Stat(s.NodesPath(base, base.Inputs[0]))
			y, _ := os.Stat(s.NodesPath(fast, fast.Inputs[0]))
			if !os.SameFile(x, y) {
				t.Error("the node file carried over is not a hardlink of the base's")
			}
		}
	}

	// The node files are what a compose reads: with the base's fragment
	// text made unreadable garbage, a compose from node files still works.
	frag0 := s.FragmentPath(base, base.Inputs[0])
	saved, err := os.ReadFile(frag0)
	if err != nil {
		t.Fatal(err)
	}
	replace := func(p string, data []byte) {
		t.Helper()
		tmp := p + ".tmp"
		if err := os.WriteFile(tmp, data, 0o444); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, p); err != nil {
			t.Fatal(err)
		}
	}
	replace(frag0, []byte("garbage"))
	compose(t, s, ComposeOptions{From: base.ID, Force: true, ID: 20, Time: when})
	replace(frag0, saved)
	// A damaged node file (or one made from another fragment) is passed
	// over for the text, with the same result.
	nodes0 := s.NodesPath(base, base.Inputs[0])
	good, err := os.ReadFile(nodes0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := nodefile.Decode(good, [32]byte{}); err == nil {
		t.Fatal("node file decodes with another key")
	}
	damaged := append([]byte(nil), good...)
	damaged[len(damaged)/2] ^= 1
	replace(nodes0, damaged)
	if s.loadNodes(base, base.Inputs[0]) != nil {
		t.Fatal("damaged node file loaded")
	}
	res, err := s.Compose(ComposeOptions{From: base.ID, Force: true, ID: 21, Time: when})
	if err != nil {
		t.Fatal(err)
	}
	again, err := old.Compose(ComposeOptions{From: base.ID, Force: true, ID: 21, Time: when})
	if err != nil {
		t.Fatal(err)
	}
	if res.Tx.Image != again.Tx.Image {
		t.Errorf("with a damaged node file: image %s, from the text %s", res.Tx.Image, again.Tx.Image)
	}
	// Owners reads the node files too.
	owners, err := s.Owners(base, "/usr/bin/alpha2")
	if err != nil || len(owners) != 1 || owners[0].Name != "alpha" {
		t.Errorf("Owners(bin/alpha2) = %v, %v", owners, err)
	}
}

// TestPreCheckApartFromBase: a tree placed where the base's image has
// nothing is pre-checked without loading the base's inputs (their files
// made garbage here, to tell), while one whose prefix or a directory above
// it is taken in the image still gets the full check and its conflict.
func TestPreCheckApartFromBase(t *testing.T) {
	s := newState(t)
	base := compose(t, s, ComposeOptions{Add: []Fragment{frag(t, s, Input{Kind: KindTree, Name: "/srv/t"},
		file{path: "opt/file", content: "a file where a directory is wanted"}, file{path: "opt/dir/f", content: "x"})}})
	for _, in := range base.Inputs {
		for _, p := range []string{s.FragmentPath(base, in), s.NodesPath(base, in)} {
			os.Chmod(filepath.Dir(p), 0o700)
			if err := os.Remove(p); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte("garbage"), 0o444); err != nil {
				t.Fatal(err)
			}
		}
	}
	im, err := s.NewImporter(stone.Format{})
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "new"), []byte("new"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	for _, prefix := range []string{"/opt/x", "/srv/y/z", "/opt/dir/sub"} {
		if err := im.PreCheck(ctx, base.ID, nil, NewInputs{Trees: []string{dir + ":" + prefix}}); err != nil {
			t.Errorf("tree at %s, apart from the base: %v", prefix, err)
		}
	}
	// Taken: the base's inputs are loaded (and found garbage here).
	for _, prefix := range []string{"/opt/file/x", "/opt/dir", "/"} {
		if err := im.PreCheck(ctx, base.ID, nil, NewInputs{Trees: []string{dir + ":" + prefix}}); err == nil {
			t.Errorf("tree at %s: the base's inputs were not loaded", prefix)
		}
	}
}

// TestPreCheckApartConflict: where a directory above the prefix is a file
// in the base, the pre-check reports the conflict, as without the image.
func TestPreCheckApartConflict(t *testing.T) {
	s := newState(t)
	base := compose(t, s, ComposeOptions{Add: []Fragment{frag(t, s, Input{Kind: KindTree, Name: "/srv/t"},
		file{path: "opt/file", content: "a file where a directory is wanted"})}})
	im, err := s.NewImporter(stone.Format{})
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "new"), []byte("new"), 0o644); err != nil {
		t.Fatal(err)
	}
	var ce *ConflictError
	err = im.PreCheck(t.Context(), base.ID, nil, NewInputs{Trees: []string{dir + ":/opt/file/x"}})
	if !errors.As(err, &ce) || ce.Conflicts[0].Path != "/opt/file" {
		t.Fatalf("PreCheck = %v", err)
	}
}
