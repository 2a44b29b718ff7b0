package erofs

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/mossfs/mossfs/internal/testenv"
	"github.com/mossfs/mossfs/tree"
)

func assetWriteOptions(a composefsAsset) WriteOptions {
	if a.version >= 0 {
		return WriteOptions{MinVersion: a.version, MaxVersion: a.version}
	}
	return DefaultWriteOptions()
}

// TestWriteImageAssets checks that every positive composefs asset gives the
// image mkcomposefs 1.0.8 gives (sha256 from upstream's test suite).
func TestWriteImageAssets(t *testing.T) {
	positive, _ := composefsAssets(t)
	for _, a := range positive {
		t.Run(a.name, func(t *testing.T) {
			root := parseAsset(t, a)
			before := snapshotTree(root)
			img, err := BuildImage(root, assetWriteOptions(a))
			if err != nil {
				t.Fatalf("BuildImage: %v", err)
			}
			if snapshotTree(root) != before {
				t.Errorf("BuildImage modified its input tree")
			}
			fsckImage(t, a.name, img, !hasExternalFiles(root))
			sum := sha256.Sum256(img)
			if got := hex.EncodeToString(sum[:]); got != a.sha256 {
				golden := testenv.SharedPath(t, "testdata", "composefs", "golden-images", a.name+".cfs")
				if want, err := os.ReadFile(golden); err == nil {
					t.Errorf("image differs from %s: %s", filepath.Base(golden), diffImages(img, want))
				}
				t.Fatalf("image sha256 %s, want %s", got, a.sha256)
			}
		})
	}
}

// TestWriteImageRoundTrip reads each asset image back (Open, Tree) and
// writes it again: the bytes must not change, and the tree read back must
// equal the parsed one.
func TestWriteImageRoundTrip(t *testing.T) {
	positive, _ := composefsAssets(t)
	for _, a := range positive {
		t.Run(a.name, func(t *testing.T) {
			root := parseAsset(t, a)
			img, err := BuildImage(root, assetWriteOptions(a))
			if err != nil {
				t.Fatal(err)
			}
			r, err := Open(bytes.NewReader(img))
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			back, err := r.Tree()
			if err != nil {
				t.Fatalf("Tree: %v", err)
			}
			v := r.Version()
			img2, err := BuildImage(back, WriteOptions{MinVersion: v, MaxVersion: v})
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(img, img2) {
				t.Errorf("rewritten image differs: %s", diffImages(img2, img))
			}
		})
	}
}

func mustParse(t *testing.T, dump string) *tree.Node {
	t.Helper()
	root, err := ParseDump(strings.NewReader(dump), DumpOptions{Name: t.Name()})
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// TestWriteImageUnsortedInput: the writer sorts children itself (without
// touching the input), so importers may hand it children in any order.
func TestWriteImageUnsortedInput(t *testing.T) {
	root := mustParse(t, "/ 4096 40755 2 0 0 0 5.0\n/b 0 100644 1 0 0 0 5.0\n/a 4096 40755 2 0 0 0 5.0\n/a/z 0 100644 1 0 0 0 5.0\n/a/-y 0 100644 1 0 0 0 5.0\n/ab 0 20644 1 0 0 0 5.0\n")
	want, err := BuildImage(root, DefaultWriteOptions())
	if err != nil {
		t.Fatal(err)
	}
	slices.Reverse(root.Children)
	slices.Reverse(root.Children[1].Children)
	before := snapshotTree(root)
	got, err := BuildImage(root, DefaultWriteOptions())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("unsorted input gives another image: %s", diffImages(got, want))
	}
	if snapshotTree(root) != before {
		t.Errorf("BuildImage modified its input")
	}
	fsckImage(t, "unsorted", got, true)
}

func TestWriteImageVersion(t *testing.T) {
	const plain = "/ 4096 40755 2 0 0 0 5.0\n/f 0 100644 1 0 0 0 5.0\n"
	const whiteout = plain + "/w 0 20644 1 0 0 0 5.0\n"
	for _, c := range []struct {
		dump     string
		opts     WriteOptions
		want     int
		opaqueXs bool
	}{
		{plain, DefaultWriteOptions(), 0, false},
		{plain, WriteOptions{1, 1}, 1, false},
		{whiteout, DefaultWriteOptions(), 1, true},
		{whiteout, WriteOptions{0, 0}, 0, false},
		{whiteout, WriteOptions{1, 1}, 1, true},
	} {
		img, err := BuildImage(mustParse(t, c.dump), c.opts)
		if err != nil {
			t.Fatal(err)
		}
		if v := int(img[12]); v != c.want {
			t.Errorf("%v: version %d, want %d", c.opts, v, c.want)
		}
		if has := bytes.Contains(img, []byte("overlay.opaque")) && bytes.Count(img, []byte("opaque")) > 1; has != c.opaqueXs {
			t.Errorf("%v: opaque markers %v, want %v", c.opts, has, c.opaqueXs)
		}
	}
}

func TestWriteImageErrors(t *testing.T) {
	dir := func() *tree.Node { return tree.NewDir("", 0o755) }
	add := func(p, c *tree.Node) *tree.Node { p.AddChild(c); return c }
	for _, c := range []struct {
		name string
		opts WriteOptions
		tree func() *tree.Node
		want string
	}{
		{"max version 2", WriteOptions{0, 2}, dir, "versions must be 0 to 1"},
		{"min above max", WriteOptions{1, 0}, dir, "max below min"},
		{"root not dir", DefaultWriteOptions(), func() *tree.Node { return &tree.Node{Mode: tree.TypeReg} }, "root must be a directory"},
		{"too big", DefaultWriteOptions(), func() *tree.Node {
			r := dir()
			add(r, &tree.Node{Name: "big", Mode: tree.TypeReg | 0o644, Size: 1<<53 + 1})
			return r
		}, "file too big"},
		{"duplicate", DefaultWriteOptions(), func() *tree.Node {
			r := dir()
			add(r, &tree.Node{Name: "a", Mode: tree.TypeReg})
			add(r, &tree.Node{Name: "a", Mode: tree.TypeReg})
			return r
		}, "/a: duplicate"},
		{"slash in name", DefaultWriteOptions(), func() *tree.Node {
			r := dir()
			add(r, &tree.Node{Name: "a/b", Mode: tree.TypeReg})
			return r
		}, "contains '/'"},
		{"dot name", DefaultWriteOptions(), func() *tree.Node {
			r := dir()
			add(r, &tree.Node{Name: "..", Mode: tree.TypeReg})
			return r
		}, "not allowed"},
		{"no type", DefaultWriteOptions(), func() *tree.Node {
			r := dir()
			add(r, &tree.Node{Name: "x", Mode: 0o644})
			return r
		}, "no valid file type"},
		{"content size", DefaultWriteOptions(), func() *tree.Node {
			r := dir()
			add(r, &tree.Node{Name: "x", Mode: tree.TypeReg, Size: 3, Content: []byte("ab")})
			return r
		}, "inline content of 2 bytes"},
		{"digest size", DefaultWriteOptions(), func() *tree.Node {
			r := dir()
			add(r, &tree.Node{Name: "x", Mode: tree.TypeReg, Size: 3, Digest: []byte{1}})
			return r
		}, "digest of 1 bytes"},
		{"empty symlink", DefaultWriteOptions(), func() *tree.Node {
			r := dir()
			add(r, &tree.Node{Name: "x", Mode: tree.TypeLink})
			return r
		}, "symlink without a target"},
		{"hardlink outside", DefaultWriteOptions(), func() *tree.Node {
			r := dir()
			add(r, &tree.Node{Name: "x", LinkTo: &tree.Node{Name: "y", Mode: tree.TypeReg}})
			return r
		}, "not in the tree"},
		{"hardlink to dir", DefaultWriteOptions(), func() *tree.Node {
			r := dir()
			d := add(r, tree.NewDir("d", 0o755))
			add(r, &tree.Node{Name: "x", LinkTo: d})
			return r
		}, "hardlink to a directory"},
		{"bad parent", DefaultWriteOptions(), func() *tree.Node {
			r := dir()
			r.Children = append(r.Children, &tree.Node{Name: "x", Mode: tree.TypeReg})
			return r
		}, "Parent"},
		{"cycle", DefaultWriteOptions(), func() *tree.Node {
			r := dir()
			a := add(r, tree.NewDir("a", 0o755))
			b := add(a, tree.NewDir("b", 0o755))
			b.Children = append(b.Children, a) // a's Parent is the root
			return r
		}, "Parent"},
		{"xattr value", DefaultWriteOptions(), func() *tree.Node {
			r := dir()
			r.Xattrs = []tree.Xattr{{Name: "user.x", Value: make([]byte, 70000)}}
			return r
		}, "value of 70000 bytes"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := BuildImage(c.tree(), c.opts)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want %q", err, c.want)
			}
		})
	}
	_, err := BuildImage(func() *tree.Node {
		r := dir()
		add(r, &tree.Node{Name: "big", Mode: tree.TypeReg | 0o644, Size: 1<<64 - 1})
		return r
	}(), DefaultWriteOptions())
	if !errors.Is(err, ErrFileTooBig) {
		t.Errorf("error %v does not wrap ErrFileTooBig", err)
	}
}

// chunkRecorder keeps what WriteImage writes and the size of each write.
type chunkRecorder struct {
	bytes.Buffer
	writes, largest int
}

func (c *chunkRecorder) Write(p []byte) (int, error) {
	c.writes++
	c.largest = max(c.largest, len(p))
	return c.Buffer.Write(p)
}

// TestWriteImageStreams: WriteImage streams every asset through its window
// and writes the same bytes as BuildImage (the image mkcomposefs writes),
// also with windows small enough that pieces straddle them, gaps of zeros
// cross them and directories' blocks do not fit in them.
func TestWriteImageStreams(t *testing.T) {
	positive, _ := composefsAssets(t)
	defer func(w uint64) { streamWindow = w }(streamWindow)
	for _, window := range []uint64{1 << 20, BlockSize, InodesStart + 100} {
		streamWindow = window
		for _, a := range positive {
			root := parseAsset(t, a)
			var rec chunkRecorder
			if err := WriteImage(&rec, root, assetWriteOptions(a)); err != nil {
				t.Fatalf("%s, window %d: WriteImage: %v", a.name, window, err)
			}
			sum := sha256.Sum256(rec.Bytes())
			if got := hex.EncodeToString(sum[:]); got != a.sha256 {
				img, _ := BuildImage(root, assetWriteOptions(a))
				t.Fatalf("%s, window %d: streamed image sha256 %s, want %s: %s", a.name, window, got, a.sha256, diffImages(rec.Bytes(), img))
			}
			if window < 1<<20 && rec.Len() > 4*int(window) && rec.writes < rec.Len()/(4*int(window)) {
				t.Errorf("%s, window %d: %d bytes in %d writes (largest %d): not streamed", a.name, window, rec.Len(), rec.writes, rec.largest)
			}
		}
	}
}
