package erofs

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mossfs/mossfs/internal/testenv"
	"github.com/mossfs/mossfs/tree"
)

// rdVersionOpts returns the write options an image was made with: its own
// composefs version, pinned (as the asset's .version file does).
func rdVersionOpts(img *Image) WriteOptions {
	return WriteOptions{MinVersion: img.Version(), MaxVersion: img.Version()}
}

// TestRoundTripGolden: for every golden image, Tree → BuildImage and
// WriteDump → ParseDump → BuildImage give back the image byte for byte.
func TestRoundTripGolden(t *testing.T) {
	for name, want := range rdGoldens(t) {
		img := rdOpen(t, want)
		got, err := BuildImage(rdTree(t, img), rdVersionOpts(img))
		if err != nil {
			t.Errorf("%s: BuildImage(Tree): %v", name, err)
		} else if !bytes.Equal(got, want) {
			t.Errorf("%s: BuildImage(Tree) differs from the image (%d vs %d bytes)", name, len(got), len(want))
		}
		var dump bytes.Buffer
		if err := img.WriteDump(&dump); err != nil {
			t.Fatal(err)
		}
		parsed, err := ParseDump(bytes.NewReader(dump.Bytes()), DumpOptions{Strict: true, Name: name + " (printed)"})
		if err != nil {
			t.Errorf("%s: ParseDump(WriteDump): %v", name, err)
			continue
		}
		got, err = BuildImage(parsed, rdVersionOpts(img))
		if err != nil {
			t.Errorf("%s: BuildImage(ParseDump(WriteDump)): %v", name, err)
		} else if !bytes.Equal(got, want) {
			t.Errorf("%s: dump round trip differs from the image", name)
		}
	}
}

// rdAssets returns the positive composefs assets (dump text by name), the
// large gzipped ones included.
func rdAssets(t testing.TB) map[string][]byte {
	t.Helper()
	dir := testenv.SharedPath(t, "testdata", "composefs")
	paths, _ := filepath.Glob(filepath.Join(dir, "*.sha256"))
	out := map[string][]byte{}
	for _, p := range paths {
		name := strings.TrimSuffix(filepath.Base(p), ".sha256")
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasSuffix(name, ".gz") {
			zr, err := gzip.NewReader(bytes.NewReader(b))
			if err != nil {
				t.Fatal(err)
			}
			if b, err = io.ReadAll(zr); err != nil {
				t.Fatal(err)
			}
		}
		out[name] = b
	}
	return out
}

// rdBuildAsset parses an asset and builds its image with the asset's
// version arguments; it checks the image's sha256 against the asset's.
func rdBuildAsset(t testing.TB, name string, dump []byte) (*tree.Node, []byte) {
	t.Helper()
	dir := testenv.SharedPath(t, "testdata", "composefs")
	strict := name != "no-newline.dump" && name != "longlink.dump" && name != "honggfuzz-longlink-unterminated.dump"
	root, err := ParseDump(bytes.NewReader(dump), DumpOptions{Strict: strict, Name: name})
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	opts := DefaultWriteOptions()
	if v, err := os.ReadFile(filepath.Join(dir, name+".version")); err == nil {
		n := int(strings.TrimSpace(string(v))[0] - '0')
		opts = WriteOptions{MinVersion: n, MaxVersion: n}
	}
	image, err := BuildImage(root, opts)
	if err != nil {
		t.Fatalf("%s: BuildImage: %v", name, err)
	}
	sum, _ := os.ReadFile(filepath.Join(dir, name+".sha256"))
	h := sha256.Sum256(image)
	if want := strings.Fields(string(sum)); len(want) == 0 || want[0] != hex.EncodeToString(h[:]) {
		t.Fatalf("%s: writer output does not match the asset's sha256", name)
	}
	return root, image
}

// TestRoundTripAssets builds every positive asset (the 22,010-line CentOS
// Stream 9 dump and the config dumps with a hardlink included), then reads
// the image back: the tree equals the parsed dump (up to what mkcomposefs
// normalises), go-erofs agrees inode by inode, and dump → parse → build
// reproduces the image.
func TestRoundTripAssets(t *testing.T) {
	for name, dump := range rdAssets(t) {
		t.Run(name, func(t *testing.T) {
			src, image := rdBuildAsset(t, name, dump)
			img := rdOpen(t, image)
			got := rdTree(t, img)
			rdNormalize(src, img.Version())
			if err := tree.Equal(src, got); err != nil {
				t.Errorf("Tree differs from the parsed dump: %v", err)
			}
			inPlace, err := OpenBytes(image, nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := tree.Equal(got, rdTree(t, inPlace)); err != nil {
				t.Errorf("OpenBytes gives another tree: %v", err)
			}
			rdCompareGoErofs(t, name, image)
			var out bytes.Buffer
			if err := img.WriteDump(&out); err != nil {
				t.Fatal(err)
			}
			again, err := ParseDump(&out, DumpOptions{Strict: true, Name: name + " (printed)"})
			if err != nil {
				t.Fatalf("ParseDump(WriteDump): %v", err)
			}
			rebuilt, err := BuildImage(again, rdVersionOpts(img))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(rebuilt, image) {
				t.Errorf("dump → parse → build differs from the image")
			}
		})
	}
}

// rdNormalize applies to a parsed source tree what writing and reading an
// image changes: sizes of non-regular files come from the image, device
// numbers only exist on devices, mode keeps 16 bits, directories carry
// their nlink, only external files keep payload and digest, and version-1
// directories holding whiteouts come back with the opaque markers.
func rdNormalize(root *tree.Node, version int) {
	_ = root.Walk(func(n *tree.Node) error {
		if n.LinkTo != nil {
			return nil
		}
		n.Mode &= 0xffff
		switch n.Mode & tree.TypeMask {
		case tree.TypeChar, tree.TypeBlock:
		default:
			n.Rdev = 0
		}
		switch n.Mode & tree.TypeMask {
		case tree.TypeLink:
			n.Size = uint64(len(n.Target))
		case tree.TypeReg:
		default:
			n.Size = 0
		}
		if n.Mode&tree.TypeMask == tree.TypeReg && len(n.Content) == 0 {
			n.Content = nil
		}
		if n.Mode&tree.TypeMask != tree.TypeReg || n.Content != nil || n.Size == 0 {
			// Only external files get redirect and metacopy.
			n.Payload, n.Digest = "", nil
		}
		if n.Mode&tree.TypeMask != tree.TypeReg {
			n.Content = nil
		}
		if n.Mode&tree.TypeMask == tree.TypeDir {
			hasWhiteout := false
			for _, c := range n.Children {
				if c.LinkTo == nil && c.Mode&tree.TypeMask == tree.TypeChar && c.Rdev == 0 {
					hasWhiteout = true
				}
			}
			if hasWhiteout && version >= 1 {
				n.SetXattr("trusted.overlay.opaque", []byte("x"))
				n.SetXattr("user.overlay.opaque", []byte("x"))
			}
		}
		return nil
	})
}
