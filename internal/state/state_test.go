package state

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mossfs/mossfs/cas"
	"github.com/mossfs/mossfs/erofs"
	"github.com/mossfs/mossfs/fsverity"
	"github.com/mossfs/mossfs/internal/stone"
	"github.com/mossfs/mossfs/internal/testenv"
	"github.com/mossfs/mossfs/tree"
)

// file is a hand-written entry of a test fragment.
type file struct {
	path    string
	mode    uint32 // with type bits; 0 = regular 0644
	content string // regular files
	target  string // symlinks
}

func newState(t *testing.T) *State {
	t.Helper()
	s, err := Create(filepath.Join(t.TempDir(), "moss"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// frag builds a fragment with the given files, storing contents longer than
// 64 bytes in the store (shorter ones are inline), parents implicit.
func frag(t *testing.T, s *State, in Input, files ...file) Fragment {
	t.Helper()
	root := tree.NewDir("", 0o755)
	dirs := map[string]*tree.Node{"": root}
	var mkdir func(p string) *tree.Node
	mkdir = func(p string) *tree.Node {
		if d, ok := dirs[p]; ok {
			return d
		}
		parent, name := filepath.Split(p)
		d := tree.NewDir(name, 0o755)
		mkdir(strings.TrimSuffix(parent, "/")).AddChild(d)
		dirs[p] = d
		return d
	}
	for _, f := range files {
		parent, name := filepath.Split(f.path)
		n := &tree.Node{Name: name, Mode: f.mode, Nlink: 1}
		switch {
		case f.mode&tree.TypeMask == tree.TypeDir:
			n = mkdir(f.path)
			n.Mode = f.mode
			continue
		case f.target != "":
			n.Mode = tree.TypeLink | 0o777
			n.Target, n.Size = f.target, uint64(len(f.target))
		default:
			if n.Mode == 0 {
				n.Mode = tree.TypeReg | 0o644
			}
			n.Size = uint64(len(f.content))
			if len(f.content) > 64 {
				d, err := s.Store().PutBytes([]byte(f.content))
				if err != nil {
					t.Fatal(err)
				}
				n.Digest, n.Payload = d[:], cas.Payload(d)
			} else if len(f.content) > 0 {
				n.Content = []byte(f.content)
			}
		}
		mkdir(strings.TrimSuffix(parent, "/")).AddChild(n)
	}
	root.Sort()
	return Fragment{Input: in, Root: root}
}

func pkg(name, version string, conflicts ...string) Input {
	return Input{Kind: KindStone, Name: name, Version: version, Conflicts: conflicts}
}

func big(s string) string { return strings.Repeat(s, 100) }

func compose(t *testing.T, s *State, opts ComposeOptions) *Transaction {
	t.Helper()
	res, err := s.Compose(opts)
	if err != nil {
		t.Fatal(err)
	}
	return res.Tx
}

func TestComposeGetList(t *testing.T) {
	s := newState(t)
	tx := compose(t, s, ComposeOptions{Add: []Fragment{
		frag(t, s, pkg("bash", "5.2-1-1"), file{path: "bin/bash", mode: tree.TypeReg | 0o755, content: big("bash")},
			file{path: "share/doc/bash/README", content: "hello"}, file{path: "bin/sh", target: "bash"}),
		frag(t, s, pkg("coreutils", "9.4-1-1"), file{path: "bin/ls", mode: tree.TypeReg | 0o755, content: big("ls")}),
	}})
	if tx.ID != 1 || tx.Parent != 0 || len(tx.Inputs) != 2 {
		t.Fatalf("tx = %+v", tx)
	}
	got, err := s.Get(1)
	if err != nil {
		t.Fatal(err)
	}
	if got.Image != tx.Image || got.Counts != tx.Counts {
		t.Fatalf("Get = %+v, want %+v", got, tx)
	}
	// The image is named by its fs-verity digest.
	data, err := os.ReadFile(s.ImagePath(tx))
	if err != nil {
		t.Fatal(err)
	}
	if d := fsverity.Sum(data); hex.EncodeToString(d[:]) != tx.Image {
		t.Fatalf("image %s has digest %x", tx.Image, d)
	}
	// The image root holds .stateID and the stones' paths.
	root, err := s.Tree(tx)
	if err != nil {
		t.Fatal(err)
	}
	sid := root.Lookup(StateIDName)
	if sid == nil || string(sid.Content) != "1" {
		t.Fatalf(".stateID = %+v", sid)
	}
	for _, p := range []string{"bin/bash", "bin/ls", "bin/sh", "share/doc/bash/README"} {
		if root.Lookup(p) == nil {
			t.Errorf("%s missing from the image", p)
		}
	}
	if n := root.Lookup("bin/bash"); n == nil || n.Mode != tree.TypeReg|0o755 || n.Payload == "" {
		t.Errorf("bin/bash = %+v", n)
	}
	want := Counts{Entries: 10, Dirs: 5, Files: 4, Symlinks: 1, Objects: 2, Bytes: 400 + 200 + 5 + 1, Image: tx.Counts.Image}
	if tx.Counts != want {
		t.Errorf("counts %+v, want %+v", tx.Counts, want)
	}
	// A compose that changes nothing creates nothing (no id, image or
	// fragment), unless forced.
	images, _ := os.ReadDir(s.ImagesDir())
	same, err := s.Compose(ComposeOptions{From: 1})
	if err != nil || !same.Unchanged || same.Tx.ID != 1 {
		t.Fatalf("no-change compose: %+v, %v", same, err)
	}
	if ids, _ := s.IDs(); len(ids) != 1 {
		t.Fatalf("no-change compose created a transaction: %v", ids)
	}
	if after, _ := os.ReadDir(s.ImagesDir()); len(after) != len(images) {
		t.Fatalf("no-change compose wrote an image: %d images, was %d", len(after), len(images))
	}
	tx2 := compose(t, s, ComposeOptions{From: 1, Force: true})
	if tx2.ID != 2 || tx2.Parent != 1 || tx2.Image == tx.Image {
		t.Fatalf("tx2 = %+v", tx2)
	}
	txs, err := s.List()
	if err != nil || len(txs) != 2 || txs[0].ID != 1 || txs[1].ID != 2 {
		t.Fatalf("List = %v, %v", txs, err)
	}
	// Fragments are shared (hardlinked) between a transaction and its child.
	a, _ := os.Stat(s.FragmentPath(tx, tx.Inputs[0]))
	b, _ := os.Stat(s.FragmentPath(tx2, tx2.Inputs[0]))
	if !os.SameFile(a, b) {
		t.Errorf("fragment of tx 2 is not a hardlink of tx 1's")
	}
	owners, err := s.Owners(tx2, "/usr/bin/bash")
	if err != nil || len(owners) != 1 || owners[0].Name != "bash" {
		t.Errorf("Owners(bin/bash) = %v, %v", owners, err)
	}
	// Reopen.
	s2, err := Open(s.Root())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s2.Get(2); err != nil {
		t.Fatal(err)
	}
	if _, err := s2.Get(3); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get(3) = %v", err)
	}
	if _, err := Open(t.TempDir()); err == nil {
		t.Fatal("Open of an empty dir succeeded")
	}
}

func TestUpgradeRemoveAndDiff(t *testing.T) {
	s := newState(t)
	compose(t, s, ComposeOptions{Add: []Fragment{
		frag(t, s, pkg("nano", "7.2-1-1"), file{path: "bin/nano", content: big("nano7")}, file{path: "share/nano/old.nanorc", content: "x"}),
		frag(t, s, pkg("vim", "9.0-1-1"), file{path: "bin/vim", content: big("vim")}),
	}})
	tx2 := compose(t, s, ComposeOptions{From: 1, Add: []Fragment{
		frag(t, s, pkg("nano", "8.0-1-1"), file{path: "bin/nano", content: big("nano8")}, file{path: "share/nano/new.nanorc", content: "y"}),
	}, Remove: []string{"vim"}})
	if len(tx2.Inputs) != 1 || tx2.Inputs[0].Version != "8.0-1-1" {
		t.Fatalf("inputs %+v", tx2.Inputs)
	}
	d, err := s.DiffTx(1, 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(d.InputsChanged) != 1 || d.InputsChanged[0].Name != "nano" || d.InputsChanged[0].OldVersion != "7.2-1-1" {
		t.Errorf("changed inputs %+v", d.InputsChanged)
	}
	if len(d.InputsRemoved) != 1 || d.InputsRemoved[0].Name != "vim" || len(d.InputsAdded) != 0 {
		t.Errorf("removed %+v added %+v", d.InputsRemoved, d.InputsAdded)
	}
	if !slices.Equal(d.Added, []string{"/share/nano/new.nanorc"}) {
		t.Errorf("added %v", d.Added)
	}
	if !slices.Equal(d.Removed, []string{"/bin/vim", "/share/nano/old.nanorc"}) {
		t.Errorf("removed %v", d.Removed)
	}
	if len(d.Changed) != 1 || d.Changed[0].Path != "/bin/nano" || d.Changed[0].What != "content" {
		t.Errorf("changed %v", d.Changed)
	}
	if _, err := s.Compose(ComposeOptions{From: 2, Remove: []string{"emacs"}}); err == nil || !strings.Contains(err.Error(), "emacs") {
		t.Errorf("removing an unknown input: %v", err)
	}
}

func TestConflicts(t *testing.T) {
	s := newState(t)
	compose(t, s, ComposeOptions{Add: []Fragment{frag(t, s, pkg("a", "1"), file{path: "share/x", content: big("a")})}})
	imagesBefore, _ := os.ReadDir(s.ImagesDir())

	// Same path, different content.
	_, err := s.Compose(ComposeOptions{From: 1, Add: []Fragment{frag(t, s, pkg("b", "1"), file{path: "share/x", content: big("b")})}})
	var ce *ConflictError
	if !errors.As(err, &ce) || len(ce.Conflicts) != 1 || ce.Conflicts[0].Path != "/share/x" || ce.Conflicts[0].Reason != "content" {
		t.Fatalf("conflict error = %v", err)
	}
	// File vs directory.
	_, err = s.Compose(ComposeOptions{From: 1, Add: []Fragment{frag(t, s, pkg("c", "1"), file{path: "share/x/y", content: "z"})}})
	if !errors.As(err, &ce) || !strings.Contains(ce.Conflicts[0].Reason, "directory") {
		t.Fatalf("conflict error = %v", err)
	}
	// Declared package conflict (italian-pizza / pineapple).
	_, err = s.Compose(ComposeOptions{Add: []Fragment{
		frag(t, s, pkg("italian-pizza", "1-1-1", "pineapple"), file{path: "share/defaults/italian-pizza"}),
		frag(t, s, pkg("pineapple", "1-1-1"), file{path: "share/defaults/pienapple"}),
	}})
	if !errors.As(err, &ce) || ce.Conflicts[0].Path != "" || !strings.Contains(err.Error(), "italian-pizza") {
		t.Fatalf("package conflict = %v", err)
	}
	// Nothing was written: no transaction, no image, no fragments.
	ids, _ := s.IDs()
	imagesAfter, _ := os.ReadDir(s.ImagesDir())
	if len(ids) != 1 || len(imagesAfter) != len(imagesBefore) {
		t.Fatalf("after conflicts: ids %v, %d images (was %d)", ids, len(imagesAfter), len(imagesBefore))
	}
	ents, _ := os.ReadDir(s.txDir())
	for _, e := range ents {
		if e.Name() != "1.json" && e.Name() != "1.inputs" && e.Name() != "next" {
			t.Errorf("left behind: %s", e.Name())
		}
	}
	// The same file from two packages is fine (kept once).
	tx := compose(t, s, ComposeOptions{From: 1, Add: []Fragment{frag(t, s, pkg("d", "1"), file{path: "share/x", content: big("a")}, file{path: "share/y", content: "d"})}})
	if tx.ID != 2 || tx.Counts.Files != 3 {
		t.Fatalf("tx %+v", tx)
	}
	owners, _ := s.Owners(tx, "share/x")
	if len(owners) != 2 {
		t.Errorf("owners of share/x: %v", owners)
	}
}

func TestTreeAtPrefix(t *testing.T) {
	s := newState(t)
	f := frag(t, s, Input{Kind: KindTree, Name: "/srv/extra"}, file{path: "hello", content: "hi"})
	f.Root.Mode = tree.TypeDir | 0o750
	placed, err := PlaceAt(f.Root, "/lib/extra")
	if err != nil {
		t.Fatal(err)
	}
	f.Root, f.Input.Prefix = placed, "/lib/extra"
	tx := compose(t, s, ComposeOptions{Add: []Fragment{f, frag(t, s, pkg("p", "1"), file{path: "lib/libp.so", content: "p"})}})
	root, err := s.Tree(tx)
	if err != nil {
		t.Fatal(err)
	}
	if n := root.Lookup("lib/extra/hello"); n == nil || string(n.Content) != "hi" {
		t.Fatalf("lib/extra/hello = %+v", n)
	}
	if n := root.Lookup("lib/extra"); n.Mode != tree.TypeDir|0o750 {
		t.Errorf("prefix dir mode %o", n.Mode)
	}
	if root.Lookup("lib/libp.so") == nil {
		t.Error("lib/libp.so missing")
	}
}

func TestRemovePruneProtect(t *testing.T) {
	s := newState(t)
	for i := range 5 {
		opts := ComposeOptions{Add: []Fragment{frag(t, s, pkg("p", string(rune('a'+i))), file{path: "f", content: big(string(rune('a' + i)))})}}
		if i > 0 {
			opts.From = uint64(i)
		}
		compose(t, s, opts)
	}
	if err := s.SetActive(5); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteMount(MountRecord{Tx: 2, Target: "/mnt/two"}); err != nil {
		t.Fatal(err)
	}
	var pe *ProtectedError
	if err := s.Remove([]uint64{1, 2}, false); !errors.As(err, &pe) || pe.Why[2] == "" {
		t.Fatalf("removing a mounted transaction: %v", err)
	}
	if ids, _ := s.IDs(); len(ids) != 5 {
		t.Fatalf("a refused removal removed something: %v", ids)
	}
	if err := s.Remove([]uint64{9}, false); !errors.Is(err, ErrNotFound) {
		t.Fatalf("removing 9: %v", err)
	}
	c, err := s.PruneCandidates(2)
	if err != nil || !slices.Equal(c, []uint64{1, 3}) {
		t.Fatalf("prune candidates %v, %v", c, err)
	}
	if err := s.Remove(c, false); err != nil {
		t.Fatal(err)
	}
	if ids, _ := s.IDs(); !slices.Equal(ids, []uint64{2, 4, 5}) {
		t.Fatalf("ids %v", ids)
	}
	// gc keeps the images of 2 (mounted), 4 and 5 and their objects, and
	// removes the fragments of 1 and 3.
	res, err := s.GC(GCOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(s.inputsDir(1)); !os.IsNotExist(err) || !slices.Equal(res.InputsRemoved, []uint64{1, 3}) {
		t.Errorf("inputs of 1 still there (%v), gc removed inputs of %v", err, res.InputsRemoved)
	}
	if len(res.ImagesRemoved) != 2 || res.ObjectsRemoved != 2 || res.ObjectsLive != 3 {
		t.Errorf("gc %+v", res)
	}
	v, err := s.Verify(VerifyOptions{})
	if err != nil || !v.OK() || v.Objects != 3 {
		t.Fatalf("verify after gc: %+v, %v", v, err)
	}
	// Ids are never reused.
	tx := compose(t, s, ComposeOptions{From: 5, Force: true})
	if tx.ID != 6 {
		t.Fatalf("next id %d", tx.ID)
	}
	if err := s.Remove([]uint64{6}, false); err != nil {
		t.Fatal(err)
	}
	tx = compose(t, s, ComposeOptions{From: 5, Force: true})
	if tx.ID != 7 {
		t.Fatalf("id after removing the newest: %d", tx.ID)
	}
	// Force removes the active and the mounted one; gc still keeps the
	// mounted image only if the record names it.
	if err := s.Remove([]uint64{2, 5}, true); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GC(GCOptions{}); err == nil {
		t.Fatal("gc with a mount record naming a removed transaction and no image succeeded")
	}
	s.RemoveMount("/mnt/two")
	if _, err := s.GC(GCOptions{}); err != nil {
		t.Fatal(err)
	}
}

func TestGCDryRunAndPins(t *testing.T) {
	s := newState(t)
	tx1 := compose(t, s, ComposeOptions{Add: []Fragment{frag(t, s, pkg("a", "1"), file{path: "a", content: big("a")})}})
	compose(t, s, ComposeOptions{Add: []Fragment{frag(t, s, pkg("b", "1"), file{path: "b", content: big("b")})}})
	// An object no transaction uses (an import without compose).
	if _, err := s.Store().PutBytes([]byte(big("orphan"))); err != nil {
		t.Fatal(err)
	}
	if err := s.Pin("boot", "sha256:"+tx1.Image); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove([]uint64{1}, false); err != nil {
		t.Fatal(err)
	}
	res, err := s.GC(GCOptions{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if res.ObjectsRemoved != 1 || len(res.ImagesRemoved) != 0 || !slices.Contains(res.InputsRemoved, 1) == true && len(res.InputsRemoved) != 0 {
		t.Errorf("dry run %+v", res)
	}
	var n int
	s.Store().Walk(func([32]byte, int64) error { n++; return nil })
	if n != 3 {
		t.Fatalf("dry run removed objects: %d left", n)
	}
	if res, err = s.GC(GCOptions{}); err != nil || res.ObjectsRemoved != 1 || res.ObjectsLive != 2 {
		t.Fatalf("gc %+v %v", res, err)
	}
	if _, err := os.Stat(filepath.Join(s.ImagesDir(), tx1.Image)); err != nil {
		t.Errorf("pinned image removed: %v", err)
	}
	s.Unpin("boot")
	if res, err = s.GC(GCOptions{}); err != nil || res.ObjectsRemoved != 1 || len(res.ImagesRemoved) != 1 {
		t.Fatalf("gc after unpin %+v %v", res, err)
	}
}

func TestGCBusy(t *testing.T) {
	s := newState(t)
	l, err := s.Lock()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.GC(GCOptions{}); !errors.Is(err, ErrBusy) {
		t.Fatalf("gc under a shared lock: %v", err)
	}
	l.Unlock()
	if _, err := s.GC(GCOptions{}); err != nil {
		t.Fatal(err)
	}
}

func TestVerifyCorruptAndMissing(t *testing.T) {
	s := newState(t)
	tx := compose(t, s, ComposeOptions{Add: []Fragment{frag(t, s, pkg("a", "1"), file{path: "a", content: big("a")}, file{path: "b", content: big("b")})}})
	root, _ := s.Tree(tx)
	pa, pb := root.Lookup("a").Payload, root.Lookup("b").Payload
	// Corrupt a, delete b.
	objA := filepath.Join(s.Store().ObjectsDir(), pa)
	os.Chmod(objA, 0o644)
	if err := os.WriteFile(objA, []byte(big("A")), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(s.Store().ObjectsDir(), pb))
	v, err := s.Verify(VerifyOptions{Tx: tx.ID})
	if err != nil {
		t.Fatal(err)
	}
	if len(v.Corrupt) != 1 || v.Corrupt[0].Payload != pa || v.Corrupt[0].Quarantined == "" {
		t.Errorf("corrupt %+v", v.Corrupt)
	}
	if len(v.Missing) != 1 || v.Missing[0].Object != pb || v.Missing[0].Path != "/b" {
		t.Errorf("missing %+v", v.Missing)
	}
	if _, err := os.Stat(objA); !os.IsNotExist(err) {
		t.Errorf("corrupt object not quarantined")
	}
	// A tampered image.
	os.WriteFile(s.ImagePath(tx), []byte("junk"), 0o644)
	v, err = s.Verify(VerifyOptions{})
	if err != nil || len(v.BadImages) != 1 {
		t.Fatalf("bad images %+v, %v", v, err)
	}
}

func TestParseIDs(t *testing.T) {
	got, err := ParseIDs([]string{"2", "5-8", "17,3", "6"})
	if err != nil || !slices.Equal(got, []uint64{2, 3, 5, 6, 7, 8, 17}) {
		t.Fatalf("ParseIDs = %v, %v", got, err)
	}
	for _, bad := range []string{"0", "x", "5-3", "-4", "3-", "1-9999999999"} {
		if _, err := ParseIDs([]string{bad}); err == nil {
			t.Errorf("ParseIDs(%q) succeeded", bad)
		}
	}
}

func TestMountRecords(t *testing.T) {
	s := newState(t)
	os.WriteFile(filepath.Join(s.Root(), "mounts", "plain"), []byte("7\n"), 0o644)
	os.WriteFile(filepath.Join(s.Root(), "mounts", "other.json"), []byte(`{"transaction": 8, "target": "/usr"}`), 0o644)
	recs, err := s.Mounts()
	if err != nil || len(recs) != 2 {
		t.Fatalf("mounts %v %v", recs, err)
	}
	ids := []uint64{recs[0].Tx, recs[1].Tx}
	slices.Sort(ids)
	if !slices.Equal(ids, []uint64{7, 8}) {
		t.Errorf("ids %v", ids)
	}
	os.WriteFile(filepath.Join(s.Root(), "mounts", "bad"), []byte(`{}`), 0o644)
	if _, err := s.Mounts(); err == nil || !strings.Contains(err.Error(), "bad") {
		t.Errorf("bad record: %v", err)
	}
}

func TestStonesAndEarlyConflicts(t *testing.T) {
	stones := testenv.SharedPath(t, "testdata", "stones")
	s := newState(t)
	im, err := s.NewImporter(stone.Format{})
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	var frags []Fragment
	for _, f := range []string{"bash-completion-2.11-1-1-x86_64.stone", "pineapple-1-1-1-x86_64.stone"} {
		fr, err := im.Stone(context.Background(), filepath.Join(stones, f))
		if err != nil {
			t.Fatal(err)
		}
		frags = append(frags, fr)
	}
	tx := compose(t, s, ComposeOptions{Add: frags})
	root, err := s.Tree(tx)
	if err != nil {
		t.Fatal(err)
	}
	var files, links int
	_ = root.Walk(func(n *tree.Node) error {
		switch n.Type() {
		case tree.TypeReg:
			files++
		case tree.TypeLink:
			links++
		}
		return nil
	})
	if files != 474+2 || links != 271 { // + pienapple and .stateID
		t.Errorf("%d files, %d symlinks, want 476 and 271", files, links)
	}
	pizza, err := StoneInput(stone.Format{}, filepath.Join(stones, "italian-pizza-1-1-1-x86_64.stone"))
	if err != nil {
		t.Fatal(err)
	}
	if pizza.Name != "italian-pizza" || pizza.Version != "1-1-1" || !slices.Equal(pizza.Conflicts, []string{"name(pineapple)"}) {
		t.Fatalf("italian-pizza input %+v", pizza)
	}
	var ce *ConflictError
	if err := s.CheckPackageConflicts(tx.ID, nil, []Input{pizza}); !errors.As(err, &ce) {
		t.Fatalf("early check: %v", err)
	}
	if err := s.CheckPackageConflicts(tx.ID, []string{"pineapple"}, []Input{pizza}); err != nil {
		t.Fatalf("early check with pineapple removed: %v", err)
	}
	// Importing the same package again decompresses nothing new and gives
	// the same fragment.
	again, err := im.Stone(context.Background(), filepath.Join(stones, "bash-completion-2.11-1-1-x86_64.stone"))
	if err != nil {
		t.Fatal(err)
	}
	a, _ := EncodeFragment(again.Root)
	b, _ := s.readFragment(tx, tx.Inputs[0])
	if string(a) != string(b) {
		t.Error("re-imported stone gives another fragment")
	}
}

// The gc's nid-level walk finds exactly the payloads of the full tree, and
// the objects importers keep for inline contents (by their digest).
func TestImageObjectsMatchTree(t *testing.T) {
	s := newState(t)
	f := frag(t, s, pkg("a", "1"), file{path: "x/a", content: big("a")}, file{path: "x/y/b", content: big("b")},
		file{path: "x/small", content: "s"}, file{path: "l", target: "x/a"}, file{path: "z/c", content: big("a")})
	// A hardlink to x/a.
	xa := f.Root.Lookup("x/a")
	f.Root.Lookup("z").AddChild(&tree.Node{Name: "hl", LinkTo: xa})
	xa.Nlink = 2
	tx := compose(t, s, ComposeOptions{Add: []Fragment{f}})
	root, err := s.Tree(tx)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{}
	root.Walk(func(n *tree.Node) error {
		if n.LinkTo == nil && n.Payload != "" {
			want[n.Payload] = true
		}
		if n.LinkTo == nil && n.Mode&tree.TypeMask == tree.TypeReg && n.Payload == "" && len(n.Content) > 0 {
			want[cas.Payload(fsverity.Sum(n.Content))] = true // x/small and .stateID
		}
		return nil
	})
	got, err := imageObjects(s.ImagePath(tx))
	if err != nil {
		t.Fatal(err)
	}
	gotSet := map[string]bool{}
	for _, d := range got {
		gotSet[cas.Payload(d)] = true
	}
	if len(want) != 4 || len(gotSet) != len(want) {
		t.Fatalf("imageObjects %v, tree %v", gotSet, want)
	}
	for p := range want {
		if !gotSet[p] {
			t.Errorf("imageObjects lacks %s", p)
		}
	}
}

// Conflicts a package's layout shows are found before its content is stored.
func TestPreCheck(t *testing.T) {
	stones := testenv.SharedPath(t, "testdata", "stones")
	bc := filepath.Join(stones, "bash-completion-2.11-1-1-x86_64.stone")
	s := newState(t)
	// A base whose tree has a regular file where bash-completion has a directory.
	compose(t, s, ComposeOptions{Add: []Fragment{frag(t, s, Input{Kind: KindTree, Name: "/srv/t"}, file{path: "share/bash-completion", content: "x"})}})
	im, err := s.NewImporter(stone.Format{})
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	objects := func() int {
		n := 0
		s.Store().Walk(func([32]byte, int64) error { n++; return nil })
		return n
	}
	before := objects()
	err = im.PreCheck(context.Background(), 1, nil, NewInputs{Stones: []string{bc}})
	var ce *ConflictError
	if !errors.As(err, &ce) || ce.Conflicts[0].Path != "/share/bash-completion" || !strings.Contains(ce.Conflicts[0].Reason, "directory") {
		t.Fatalf("PreCheck = %v", err)
	}
	if objects() != before {
		t.Fatal("PreCheck stored objects")
	}
	// Declared package conflicts, among new packages.
	err = im.PreCheck(context.Background(), 0, nil, NewInputs{Stones: []string{filepath.Join(stones, "italian-pizza-1-1-1-x86_64.stone"), filepath.Join(stones, "pineapple-1-1-1-x86_64.stone")}})
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), "name(pineapple)") {
		t.Fatalf("PreCheck of conflicting packages = %v", err)
	}
	// Content: a base with bash-completion's 7z file changed. New content
	// cannot be compared before it is hashed; once the index knows it, the
	// conflict is found up front.
	if err := im.PreCheck(context.Background(), 0, nil, NewInputs{Stones: []string{bc}}); err != nil {
		t.Fatal(err)
	}
	fr, err := im.Stone(context.Background(), bc)
	if err != nil {
		t.Fatal(err)
	}
	other := frag(t, s, Input{Kind: KindTree, Name: "/srv/u"}, file{path: "share/bash-completion/completions/7z", mode: tree.TypeReg | 0o644, content: big("7z")})
	tx := compose(t, s, ComposeOptions{Add: []Fragment{other}})
	if err := im.PreCheck(context.Background(), tx.ID, nil, NewInputs{Stones: []string{bc}}); !errors.As(err, &ce) || ce.Conflicts[0].Reason != "content" {
		t.Fatalf("PreCheck with known content = %v", err)
	}
	_ = fr

	// Trees are hashed, not stored: a tree whose file's content differs
	// from the base's is refused without an object written.
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "completions"), 0o755)
	if err := os.WriteFile(filepath.Join(dir, "completions", "7z"), []byte(big("another 7z")), 0o644); err != nil {
		t.Fatal(err)
	}
	before = objects()
	err = im.PreCheck(context.Background(), tx.ID, nil, NewInputs{Trees: []string{dir + ":share/bash-completion"}})
	if !errors.As(err, &ce) || ce.Conflicts[0].Reason != "content" || ce.Conflicts[0].Path != "/share/bash-completion/completions/7z" {
		t.Fatalf("PreCheck of a conflicting tree = %v", err)
	}
	if objects() != before {
		t.Fatal("PreCheck of a tree stored objects")
	}
	// The same content is no conflict.
	if err := os.WriteFile(filepath.Join(dir, "completions", "7z"), []byte(big("7z")), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := im.PreCheck(context.Background(), tx.ID, nil, NewInputs{Trees: []string{dir + ":share/bash-completion"}}); err != nil {
		t.Fatalf("PreCheck of an agreeing tree = %v", err)
	}
}

func TestParseCrashPoints(t *testing.T) {
	m := parseCrashPoints("a, b@3,c@x,")
	if len(m) != 3 || m["a"].at != 1 || m["b"].at != 3 || m["c"].at != 1 {
		t.Fatalf("parseCrashPoints = %v", m)
	}
	if parseCrashPoints("") != nil {
		t.Fatal("empty env arms crash points")
	}
}

// Two inputs shipping the same file keep one inode; a hardlink to the
// dropped copy follows the kept one.
func TestMergeSharedFileHardlink(t *testing.T) {
	s := newState(t)
	a := frag(t, s, pkg("a", "1"), file{path: "f", content: big("same")})
	b := frag(t, s, pkg("b", "1"), file{path: "f", content: big("same")})
	bf := b.Root.Lookup("f")
	b.Root.AddChild(&tree.Node{Name: "g", LinkTo: bf})
	b.Root.Sort()
	root, err := Merge([]Fragment{a, b})
	if err != nil {
		t.Fatal(err)
	}
	f, g := root.Lookup("f"), root.Lookup("g")
	if f == nil || g == nil || g.LinkTo != f {
		t.Fatalf("f = %p, g.LinkTo = %p", f, g.LinkTo)
	}
}

// TestLockRecoversCrashedBatch: a writer that crashed before syncing left a
// batch marker and a torn object. The next import's Lock re-hashes the
// batch and quarantines the torn object, so the import stores the content
// again instead of trusting Has.
func TestLockRecoversCrashedBatch(t *testing.T) {
	s := newState(t)
	content := []byte(big("torn by a power cut "))
	d := fsverity.Sum(content)
	obj := s.Store().ObjectPath(d)
	if err := os.MkdirAll(filepath.Dir(obj), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(obj, make([]byte, len(content)), 0o644); err != nil {
		t.Fatal(err)
	}
	pending := filepath.Join(s.Store().Root(), "pending")
	if err := os.MkdirAll(pending, 0o755); err != nil {
		t.Fatal(err)
	}
	marker := fmt.Sprintf("%d\n", time.Now().Add(-time.Minute).UnixNano())
	if err := os.WriteFile(filepath.Join(pending, "crashed"), []byte(marker), 0o644); err != nil {
		t.Fatal(err)
	}
	if !s.Store().NeedsRecovery() || !s.Store().Has(d) {
		t.Fatal("set-up: no recovery needed or torn object not present")
	}
	lk, err := s.Lock()
	if err != nil {
		t.Fatal(err)
	}
	if s.Store().Has(d) || s.Store().NeedsRecovery() {
		t.Fatal("after Lock: torn object still trusted or marker left")
	}
	f := frag(t, s, pkg("a", "1"), file{path: "lib/a", content: string(content)})
	lk.Unlock()
	compose(t, s, ComposeOptions{Add: []Fragment{f}})
	if err := s.Store().Verify(d); err != nil {
		t.Fatalf("object after re-import: %v", err)
	}
}

// TestLockNestedWithStaleMarker: Lock under a Lock this process already
// holds (Compose inside a command's Lock) must not wait on itself when a
// crashed writer's marker asks for recovery.
func TestLockNestedWithStaleMarker(t *testing.T) {
	s := newState(t)
	outer, err := s.Lock()
	if err != nil {
		t.Fatal(err)
	}
	defer outer.Unlock()
	pending := filepath.Join(s.Store().Root(), "pending")
	if err := os.MkdirAll(pending, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(pending, "crashed"), []byte("1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		inner, err := s.Lock()
		if err == nil {
			inner.Unlock()
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("nested Lock waits on this process's own lock")
	}
}

// TestDumpImport: a composefs dump's tree joins a transaction at a prefix;
// contents come from a digest store (checked against the dump's digests)
// or the store itself; missing, wrong and escaping objects are refused with
// the file named.
func TestDumpImport(t *testing.T) {
	s := newState(t)
	digestStore := t.TempDir()
	content := []byte(big("from a digest store "))
	d := fsverity.Sum(content)
	obj := filepath.Join(digestStore, cas.Payload(d))
	os.MkdirAll(filepath.Dir(obj), 0o755)
	if err := os.WriteFile(obj, content, 0o644); err != nil {
		t.Fatal(err)
	}
	writeDump := func(name, payload string, digest []byte, gz bool) string {
		t.Helper()
		root := tree.NewDir("", 0o755)
		bin := tree.NewDir("bin", 0o755)
		root.AddChild(bin)
		bin.AddChild(&tree.Node{Name: "tool", Mode: tree.TypeReg | 0o755, Nlink: 1, Size: uint64(len(content)), Payload: payload, Digest: digest})
		bin.AddChild(&tree.Node{Name: "small", Mode: tree.TypeReg | 0o644, Nlink: 1, Size: 3, Content: []byte("hi\n")})
		var b bytes.Buffer
		if err := erofs.WriteDump(&b, root); err != nil {
			t.Fatal(err)
		}
		data := b.Bytes()
		if gz {
			var z bytes.Buffer
			zw := gzip.NewWriter(&z)
			zw.Write(data)
			zw.Close()
			data = z.Bytes()
		}
		p := filepath.Join(t.TempDir(), name)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	im, err := s.NewImporter(stone.Format{})
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	ctx := context.Background()

	good := writeDump("a.dump.gz", cas.Payload(d), d[:], true)
	if _, err := im.Dump(ctx, good, "/opt/a", ""); err == nil || !strings.Contains(err.Error(), "/bin/tool") {
		t.Fatalf("dump with its object nowhere: %v", err)
	}
	f, err := im.Dump(ctx, good, "/opt/a", digestStore)
	if err != nil {
		t.Fatal(err)
	}
	tx := compose(t, s, ComposeOptions{Add: []Fragment{f}})
	got, err := s.Tree(tx)
	if err != nil {
		t.Fatal(err)
	}
	tool := got.Lookup("opt/a/bin/tool")
	if tool == nil || tool.Payload != cas.Payload(d) || got.Lookup("opt/a/bin/small") == nil {
		t.Fatalf("composed tree lacks the dump's files: %+v", tool)
	}
	if err := s.Store().Verify(d); err != nil {
		t.Fatal(err)
	}
	if tx.Inputs[0].Kind != KindDump || tx.Inputs[0].Prefix != "/opt/a" {
		t.Errorf("input %+v", tx.Inputs[0])
	}
	// Now in the store: no digest store needed.
	if _, err := im.Dump(ctx, good, "/", ""); err != nil {
		t.Fatal(err)
	}

	// A payload naming a differently named file whose content is wrong.
	other := []byte(big("something else "))
	os.WriteFile(filepath.Join(digestStore, "wrong"), other, 0o644)
	d2 := fsverity.Sum([]byte(big("never stored ")))
	if _, err := im.Dump(ctx, writeDump("b.dump", "wrong", d2[:], false), "/", digestStore); err == nil || !strings.Contains(err.Error(), "digest") {
		t.Fatalf("dump whose object does not match: %v", err)
	}
	// A payload escaping the digest store.
	if _, err := im.Dump(ctx, writeDump("c.dump", "../../etc/passwd", d2[:], false), "/", digestStore); err == nil || !strings.Contains(err.Error(), "/bin/tool") {
		t.Fatalf("dump escaping its digest store: %v", err)
	}
	// Garbage.
	bad := filepath.Join(t.TempDir(), "bad.dump")
	os.WriteFile(bad, []byte("/ 0 40755 2 0 0 0 0.0 - - -\n/x nonsense\n"), 0o644)
	if _, err := im.Dump(ctx, bad, "/", ""); err == nil || !strings.Contains(err.Error(), "bad.dump") {
		t.Fatalf("malformed dump: %v", err)
	}
	// Pre-check: the dump against a base where /opt/a/bin/tool differs.
	f2 := frag(t, s, Input{Kind: KindTree, Name: "/srv/x", Prefix: "/"}, file{path: "opt/a/bin/tool", mode: tree.TypeReg | 0o755, content: big("a different tool")})
	tx2 := compose(t, s, ComposeOptions{Add: []Fragment{f2}})
	var ce *ConflictError
	if err := im.PreCheck(ctx, tx2.ID, nil, NewInputs{Dumps: []string{good + ":/opt/a"}}); !errors.As(err, &ce) || ce.Conflicts[0].Reason != "content" {
		t.Fatalf("PreCheck of a conflicting dump = %v", err)
	}
}

// TestMountRecordsOfEarlierBoot: a record written during another boot
// (another kernel boot id) describes a mount that is gone: it neither
// protects its transaction nor counts as a mount; one of this boot does.
func TestMountRecordsOfEarlierBoot(t *testing.T) {
	s := newState(t)
	f := frag(t, s, pkg("a", "1"), file{path: "a", content: "a"})
	compose(t, s, ComposeOptions{Add: []Fragment{f}})
	compose(t, s, ComposeOptions{From: 1, Add: []Fragment{frag(t, s, pkg("a", "2"), file{path: "a", content: "b"})}})
	if err := s.WriteMount(MountRecord{Tx: 1, Target: "/usr", BootID: "00000000-0000-0000-0000-000000000000"}); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteMount(MountRecord{Tx: 2, Target: "/mnt"}); err != nil {
		t.Fatal(err)
	}
	recs, err := s.Mounts()
	if err != nil || len(recs) != 1 || recs[0].Tx != 2 || recs[0].BootID == "" {
		t.Fatalf("mounts %+v %v, want only this boot's record of 2", recs, err)
	}
	prot, err := s.Protected()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := prot[1]; ok {
		t.Errorf("transaction 1 protected by a record of an earlier boot: %v", prot)
	}
	if err := s.Remove([]uint64{1}, false); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove([]uint64{2}, false); err == nil {
		t.Error("removed a transaction mounted during this boot")
	}
}
