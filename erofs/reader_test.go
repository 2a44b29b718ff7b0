package erofs

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/mossfs/mossfs/internal/gentree"
	"github.com/mossfs/mossfs/internal/testenv"
	"github.com/mossfs/mossfs/tree"
)

// rdGoldens returns the golden composefs images (made by mkcomposefs
// 1.0.8) by asset name ("special.dump").
func rdGoldens(t testing.TB) map[string][]byte {
	t.Helper()
	dir := testenv.SharedPath(t, "testdata", "composefs", "golden-images")
	paths, err := filepath.Glob(filepath.Join(dir, "*.cfs"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no golden images in %s (%v)", dir, err)
	}
	out := make(map[string][]byte)
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		out[strings.TrimSuffix(filepath.Base(p), ".cfs")] = b
	}
	return out
}

func rdOpen(t testing.TB, b []byte) *Image {
	t.Helper()
	img, err := Open(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return img
}

func rdTree(t testing.TB, img *Image) *tree.Node {
	t.Helper()
	root, err := img.Tree()
	if err != nil {
		t.Fatalf("Tree: %v", err)
	}
	return root
}

func TestOpenGoldenHeader(t *testing.T) {
	want := map[string]struct {
		version int
		acl     bool
	}{
		"special.dump":                        {0, false},
		"special_v1.dump":                     {1, false},
		"no-newline.dump":                     {0, false},
		"honggfuzz-bigfile-with-acl.dump":     {0, true},
		"honggfuzz-chardev-nonzero-size.dump": {1, false}, // a user whiteout selects v1
		"bigfile.dump":                        {0, false},
	}
	for name, b := range rdGoldens(t) {
		img := rdOpen(t, b)
		if img.RootNid() != RootNid {
			t.Errorf("%s: root nid %d", name, img.RootNid())
		}
		if img.Size() != int64(len(b)) {
			t.Errorf("%s: Size %d, file %d", name, img.Size(), len(b))
		}
		if w, ok := want[name]; ok {
			if img.Version() != w.version || img.HasACL() != w.acl {
				t.Errorf("%s: version %d acl %v, want %d %v", name, img.Version(), img.HasACL(), w.version, w.acl)
			}
		}
	}
}

// TestTreeSpecial checks the source tree of special.dump's image against the
// dump's lines (every file type, devices, inline sizes around a block,
// escaped overlay xattrs, a user whiteout).
func TestTreeSpecial(t *testing.T) {
	for _, asset := range []string{"special.dump", "special_v1.dump"} {
		t.Run(asset, func(t *testing.T) {
			img := rdOpen(t, rdGoldens(t)[asset])
			root := rdTree(t, img)
			var names []string
			for _, c := range root.Children {
				names = append(names, c.Name)
			}
			wantNames := []string{"blockdev", "chardev", "escaped-xattr", "fifo", "inline", "inline-large1", "inline-large2", "inline-large3", "whiteout"}
			if !slices.Equal(names, wantNames) {
				t.Fatalf("root children %q, want %q (no whiteout stubs)", names, wantNames)
			}
			if root.Mode != 0o40555 || root.Size != 4096 || root.Mtime != (tree.Timespec{Sec: 1633950376}) {
				t.Errorf("root: mode %o size %d mtime %v", root.Mode, root.Size, root.Mtime)
			}
			wantRootX := []string{"trusted.foo1", "user.foo2"}
			if asset == "special_v1.dump" {
				// libcomposefs gives the v1 opaque markers back, unescaped.
				wantRootX = []string{"trusted.foo1", "trusted.overlay.opaque", "user.foo2", "user.overlay.opaque"}
			}
			if got := rdXattrNames(root.Xattrs); !slices.Equal(got, wantRootX) {
				t.Errorf("root xattrs %q, want %q", got, wantRootX)
			}
			check := func(path string, mode uint32, size uint64, rdev uint32) *tree.Node {
				n := root.Lookup(path)
				if n == nil {
					t.Fatalf("%s missing", path)
				}
				if n.Mode != mode || n.Size != size || n.Rdev != rdev {
					t.Errorf("%s: mode %o size %d rdev %d, want %o %d %d", path, n.Mode, n.Size, n.Rdev, mode, size, rdev)
				}
				return n
			}
			check("blockdev", 0o60777, 0, 107690)
			check("chardev", 0o20777, 0, 10769)
			check("fifo", 0o10777, 0, 0)
			w := check("whiteout", 0o20777, 0, 0)
			if got := rdXattrNames(w.Xattrs); !slices.Equal(got, []string{"trusted.foo"}) {
				t.Errorf("whiteout xattrs %q", got)
			}
			in := check("inline", 0o100777, 15, 0)
			if string(in.Content) != "FOOBAR\nINAFILE\n" {
				t.Errorf("inline content %q", in.Content)
			}
			for i, size := range []uint64{4095, 4096, 4097} {
				n := check("inline-large"+string(rune('1'+i)), 0o100777, size, 0)
				if uint64(len(n.Content)) != size {
					t.Errorf("%s: %d content bytes", n.Name, len(n.Content))
				}
			}
			if n := root.Lookup("inline-large3"); n.Mtime.Sec != 1665486376 {
				t.Errorf("inline-large3 mtime %v", n.Mtime)
			}
			e := root.Lookup("escaped-xattr")
			if v, _ := e.Xattr("trusted.overlay.redirect"); string(v) != "/foo\n" {
				t.Errorf("escaped trusted.overlay.redirect = %q", v)
			}
			if e.Payload != "" || e.Digest != nil {
				t.Errorf("escaped-xattr: payload %q digest %x", e.Payload, e.Digest)
			}
		})
	}
}

func rdXattrNames(xs []tree.Xattr) []string {
	var out []string
	for _, x := range xs {
		out = append(out, x.Name)
	}
	return out
}

func TestTreeOtherGoldens(t *testing.T) {
	g := rdGoldens(t)
	root := rdTree(t, rdOpen(t, g["bigfile.dump"]))
	if n := root.Lookup("bigfile"); n == nil || n.Size != 9000000000000000 || n.Content != nil || n.Payload != "" {
		t.Errorf("bigfile: %+v", n)
	}
	root = rdTree(t, rdOpen(t, g["longlink.dump"]))
	for name, l := range map[string]int{"big-but-not-max-link": 4070, "max-link": 4095} {
		n := root.Lookup(name)
		if n == nil || len(n.Target) != l || strings.Trim(n.Target, "a") != "" {
			t.Errorf("%s: %+v", name, n)
		}
	}
	root = rdTree(t, rdOpen(t, g["honggfuzz-chardev-nonzero-size.dump"]))
	if n := root.Lookup("chardev"); n == nil || n.Mode != 0o20777 || n.Size != 0 || n.Rdev != 0 {
		t.Errorf("chardev (user whiteout): %+v", n)
	}
	root = rdTree(t, rdOpen(t, g["honggfuzz-bigfile-with-acl.dump"]))
	n := root.Lookup("something-with-acls-and-overlay")
	if v, _ := n.Xattr("system.posix_acl_default"); string(v) != "x" {
		t.Errorf("acl xattr %q", v)
	}
}

// TestInodeOverlayView checks the nid-level API: stubs hidden, overlay
// xattrs shown as the kernel's overlayfs shows them.
func TestInodeOverlayView(t *testing.T) {
	img := rdOpen(t, rdGoldens(t)["special_v1.dump"])
	ents, err := img.ReadDirNid(img.RootNid())
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 9 {
		t.Fatalf("%d root entries, want 9", len(ents))
	}
	byName := map[string]DirEntry{}
	for _, e := range ents {
		byName[e.Name] = e
	}
	// The user whiteout is an escaped whiteout: a regular file carrying
	// trusted.overlay.whiteout through the mount.
	w, err := img.Inode(byName["whiteout"].Nid)
	if err != nil {
		t.Fatal(err)
	}
	if w.Mode&tree.TypeMask != tree.TypeReg || byName["whiteout"].Type != tree.TypeReg {
		t.Errorf("whiteout mode %o", w.Mode)
	}
	if got := rdXattrNames(w.Xattrs); !slices.Equal(got, []string{"trusted.foo", "trusted.overlay.whiteout", "user.overlay.whiteout"}) {
		t.Errorf("whiteout xattrs %q", got)
	}
	r, err := img.Inode(img.RootNid())
	if err != nil {
		t.Fatal(err)
	}
	// Root: opaque "y" hidden, escaped opaque "x" visible.
	if v, ok := r.Xattrs, true; ok {
		got := map[string]string{}
		for _, x := range v {
			got[x.Name] = string(x.Value)
		}
		if got["trusted.overlay.opaque"] != "x" || got["trusted.overlay.whiteouts"] != "" || len(got) != 6 {
			t.Errorf("root xattrs %q", got)
		}
	}
	if _, err := img.Lookup(img.RootNid(), "00"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stub 00 visible: %v", err)
	}
	nid, err := img.Lookup(img.RootNid(), "inline")
	if err != nil {
		t.Fatal(err)
	}
	ino, _ := img.Inode(nid)
	if !ino.HasInline || ino.Size != 15 {
		t.Errorf("inline: %+v", ino)
	}
	buf := make([]byte, 6)
	if n, err := img.ReadAt(nid, buf, 7); n != 6 || err != nil || string(buf) != "INAFIL" {
		t.Errorf("ReadAt: %d %v %q", n, err, buf)
	}
	if n, err := img.ReadAt(nid, buf, 12); n != 3 || err == nil {
		t.Errorf("ReadAt at end: %d %v", n, err)
	}
}

// TestOpenRejects checks that broken headers give errors naming the problem.
func TestOpenRejects(t *testing.T) {
	good := rdGoldens(t)["special.dump"]
	mut := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	cases := map[string][]byte{
		"short":           good[:100],
		"one block":       good[:4096],
		"composefs magic": mut(func(b []byte) []byte { b[0]++; return b }),
		"header version":  mut(func(b []byte) []byte { b[4] = 2; return b }),
		"erofs magic":     mut(func(b []byte) []byte { b[1024]++; return b }),
		"block size":      mut(func(b []byte) []byte { b[1024+12] = 9; return b }),
		"truncated":       good[:len(good)-4096],
		"incompat":        mut(func(b []byte) []byte { b[1024+80] = 0x2; return b }),
		"root nid":        mut(func(b []byte) []byte { b[1024+14] = 0xff; b[1024+15] = 0xff; return b }),
	}
	for name, b := range cases {
		if _, err := Open(bytes.NewReader(b)); err == nil {
			t.Errorf("%s: Open accepted", name)
		} else if !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: error %v does not wrap ErrCorrupt", name, err)
		}
	}
}

// TestTreeErrorNamesPath corrupts one inode and checks that Tree's error
// names the image file and the path.
func TestTreeErrorNamesPath(t *testing.T) {
	b := bytes.Clone(rdGoldens(t)["special.dump"])
	img := rdOpen(t, b)
	nid, err := img.Lookup(img.RootNid(), "inline")
	if err != nil {
		t.Fatal(err)
	}
	off := img.metaStart + int64(nid)*SlotSize
	b[off+4], b[off+5] = 0, 0 // i_mode without a file type
	p := filepath.Join(t.TempDir(), "broken.cfs")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	img, closeImg, err := OpenFile(p, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer closeImg()
	_, err = img.Tree()
	if err == nil || !errors.Is(err, ErrCorrupt) || !strings.HasPrefix(err.Error(), p+": /inline: ") {
		t.Errorf("Tree error %q, want it to start with %q", err, p+": /inline: ")
	}
}

// TestAttrMatchesInode: Attr agrees with Inode on every inode of every
// golden image and of a generated tree with external files, read in place
// and through the block cache (the corrupted images of
// TestReaderCorruptions and the fuzz target check that it fails where Inode
// fails).
func TestAttrMatchesInode(t *testing.T) {
	images := rdGoldens(t)
	gen, err := BuildImage(gentree.Tree(gentree.Tiny), DefaultWriteOptions())
	if err != nil {
		t.Fatal(err)
	}
	images["gentree.Tiny"] = gen
	payloads := 0
	for name, b := range images {
		byCache := rdOpen(t, b)
		inPlace, err := OpenBytes(b, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, img := range []*Image{byCache, inPlace} {
			queue := []uint64{img.RootNid()}
			for i := 0; i < len(queue); i++ {
				ents, err := img.ReadDirNid(queue[i])
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				for _, e := range ents {
					func() {
						defer func() {
							if r := recover(); r != nil {
								t.Errorf("%s: %s: %v", name, e.Name, r)
							}
						}()
						rdCheckAttr(img, e.Nid)
					}()
					if a, err := img.Attr(e.Nid); err == nil && a.HasPayload {
						payloads++
					}
					if e.Type == tree.TypeDir {
						queue = append(queue, e.Nid)
					}
				}
			}
		}
	}
	if payloads == 0 {
		t.Error("no golden image has an external file: HasPayload is untested")
	}
}
