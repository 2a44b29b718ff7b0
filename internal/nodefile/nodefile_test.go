package nodefile

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/mossfs/mossfs/erofs"
	"github.com/mossfs/mossfs/internal/gentree"
	"github.com/mossfs/mossfs/internal/testenv"
	"github.com/mossfs/mossfs/tree"
)

// readDump reads a composefs dump of the shared test data (gunzipped).
func readDump(t testing.TB, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(testenv.SharedPath(t, "testdata", "composefs", name))
	if err != nil {
		t.Fatal(err)
	}
	if strings.HasSuffix(name, ".gz") {
		zr, err := gzip.NewReader(bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		if data, err = io.ReadAll(zr); err != nil {
			t.Fatal(err)
		}
	}
	return data
}

// sameNode compares every field of two trees, nil against empty included,
// and the hardlink targets by path.
func sameNode(a, b *tree.Node) error {
	p := a.Path()
	switch {
	case a.Name != b.Name || a.Mode != b.Mode || a.UID != b.UID || a.GID != b.GID || a.Nlink != b.Nlink ||
		a.Mtime != b.Mtime || a.Size != b.Size || a.Rdev != b.Rdev || a.Target != b.Target || a.Payload != b.Payload:
		return fmt.Errorf("%s: metadata differs:\n%+v\n%+v", p, *a, *b)
	case (a.Content == nil) != (b.Content == nil) || !bytes.Equal(a.Content, b.Content):
		return fmt.Errorf("%s: content differs", p)
	case (a.Digest == nil) != (b.Digest == nil) || !bytes.Equal(a.Digest, b.Digest):
		return fmt.Errorf("%s: digest differs", p)
	case (a.Xattrs == nil) != (b.Xattrs == nil) || len(a.Xattrs) != len(b.Xattrs):
		return fmt.Errorf("%s: xattrs differ", p)
	case (a.Children == nil) != (b.Children == nil) || len(a.Children) != len(b.Children):
		return fmt.Errorf("%s: children differ", p)
	case (a.LinkTo == nil) != (b.LinkTo == nil) || a.LinkTo != nil && a.LinkTo.Path() != b.LinkTo.Path():
		return fmt.Errorf("%s: hardlink differs", p)
	case (a.Parent == nil) != (b.Parent == nil):
		return fmt.Errorf("%s: parent differs", p)
	}
	for i := range a.Xattrs {
		x, y := a.Xattrs[i], b.Xattrs[i]
		if x.Name != y.Name || !bytes.Equal(x.Value, y.Value) || (x.Value == nil) != (y.Value == nil) && len(x.Value) > 0 {
			return fmt.Errorf("%s: xattr %s differs", p, x.Name)
		}
	}
	for i := range a.Children {
		if a.Children[i].Parent != a || b.Children[i].Parent != b {
			return fmt.Errorf("%s: child %d has another parent", p, i)
		}
		if err := sameNode(a.Children[i], b.Children[i]); err != nil {
			return err
		}
	}
	return nil
}

func image(t testing.TB, root *tree.Node) []byte {
	t.Helper()
	img, err := erofs.BuildImage(root, erofs.DefaultWriteOptions())
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// TestRoundTrip: the trees of the shared dumps (hardlinks, devices, long
// symlinks, xattrs, inline files, a whole OS) and the benchmark tree come
// back field for field, and the images written from the decoded trees are
// byte for byte those written from the parsed ones.
func TestRoundTrip(t *testing.T) {
	dumps := []string{"config-with-hard-link.dump.gz", "config.dump.gz", "cs9-x86_64-minimal.dump.gz", "special.dump",
		"special_v1.dump", "bigfile-xattr.dump", "honggfuzz-bigfile-with-acl.dump", "honggfuzz-long-symlink.dump", "longlink.dump", "no-newline.dump"}
	for _, name := range dumps {
		t.Run(name, func(t *testing.T) {
			text := readDump(t, name)
			parse := func() *tree.Node {
				root, err := erofs.ParseDumpBytes(text, erofs.DumpOptions{Name: name})
				if err != nil {
					t.Fatal(err)
				}
				root.Sort()
				return root
			}
			roundTrip(t, parse, sha256.Sum256(text))
		})
	}
	t.Run("gentree", func(t *testing.T) {
		parse := func() *tree.Node {
			root := gentree.Tree(gentree.Small)
			root.Sort()
			return root
		}
		roundTrip(t, parse, [32]byte{1})
	})
}

func roundTrip(t *testing.T, parse func() *tree.Node, key [32]byte) {
	want := parse()
	data, err := Encode(want, key)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Decode(data, key)
	if err != nil {
		t.Fatal(err)
	}
	if err := sameNode(want, got); err != nil {
		t.Fatal(err)
	}
	again, err := Encode(got, key)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(data, again) {
		t.Fatal("encoding the decoded tree gives other bytes")
	}
	if !bytes.Equal(image(t, parse()), image(t, got)) {
		t.Fatal("the image of the decoded tree differs from the image of the parsed one")
	}
}

// TestRefused: a file made from another fragment, a damaged one, a cut one
// and one of another version are refused, each with its reason.
func TestRefused(t *testing.T) {
	root, err := erofs.ParseDumpBytes(readDump(t, "config-with-hard-link.dump.gz"), erofs.DumpOptions{})
	if err != nil {
		t.Fatal(err)
	}
	root.Sort()
	key := [32]byte{7}
	data, err := Encode(root, key)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Decode(data, [32]byte{8}); !errors.Is(err, ErrMismatch) {
		t.Errorf("other key: %v", err)
	}
	for _, off := range []int{0, 9, 50, 64, headerSize, headerSize + 3, len(data) / 2, len(data) - 1} {
		bad := bytes.Clone(data)
		bad[off] ^= 0x40
		if _, err := Decode(bad, key); err == nil {
			t.Errorf("byte %d flipped: decoded", off)
		}
	}
	if _, err := Decode(data[:len(data)-1], key); err == nil || !strings.Contains(err.Error(), "size") {
		t.Errorf("cut: %v", err)
	}
	if _, err := Decode(nil, key); err == nil {
		t.Error("empty: decoded")
	}
}

// TestStructureChecked: records that pass the checksum but do not form a
// tree (a node in two directories, a cycle through a hardlink, unsorted
// names) are refused: a checksum only guards against damage.
func TestStructureChecked(t *testing.T) {
	root := tree.NewDir("", 0o755)
	a, b := tree.NewDir("a", 0o755), tree.NewDir("b", 0o755)
	root.AddChild(a)
	root.AddChild(b)
	f := &tree.Node{Name: "f", Mode: tree.TypeReg | 0o644, Nlink: 2}
	a.AddChild(f)
	b.AddChild(&tree.Node{Name: "g", LinkTo: f})
	key := [32]byte{}
	good, err := Encode(root, key)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Decode(good, key); err != nil {
		t.Fatal(err)
	}
	rec := func(data []byte, i, field int) []byte { return data[headerSize+i*nodeSize+field:] }
	// Breadth-first: 0 root, 1 a, 2 b, 3 f, 4 g.
	for name, mutate := range map[string]func([]byte){
		"child listed twice":      func(d []byte) { binary.LittleEndian.PutUint32(rec(d, 2, 4), 3) },
		"wrong parent":            func(d []byte) { binary.LittleEndian.PutUint32(rec(d, 3, 0), 2) },
		"hardlink to a directory": func(d []byte) { binary.LittleEndian.PutUint32(rec(d, 4, 12), 1) },
		"hardlink to itself":      func(d []byte) { binary.LittleEndian.PutUint32(rec(d, 4, 12), 4) },
		"unsorted": func(d []byte) {
			binary.LittleEndian.PutUint32(rec(d, 1, 60), binary.LittleEndian.Uint32(rec(d, 2, 60)))
		},
		"file with children": func(d []byte) { binary.LittleEndian.PutUint32(rec(d, 1, 16), tree.TypeReg|0o644) },
	} {
		bad := bytes.Clone(good)
		mutate(bad)
		binary.LittleEndian.PutUint32(bad[64:], crc32.Checksum(bad[headerSize:], crcTable()))
		if _, err := Decode(bad, key); err == nil {
			t.Errorf("%s: decoded", name)
		}
	}
}

// FuzzDecode: any input (its checksum made right, so that the structure
// checks are reached) decodes to a tree or an error, never a panic; a tree
// that decodes encodes and decodes to the same tree.
func FuzzDecode(f *testing.F) {
	for _, name := range []string{"config-with-hard-link.dump.gz", "special.dump", "bigfile-xattr.dump"} {
		root, err := erofs.ParseDumpBytes(readDump(f, name), erofs.DumpOptions{})
		if err != nil {
			f.Fatal(err)
		}
		root.Sort()
		data, err := Encode(root, [32]byte{})
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) >= headerSize {
			data = bytes.Clone(data)
			copy(data[16:48], make([]byte, 32))
			binary.LittleEndian.PutUint32(data[64:], crc32.Checksum(data[headerSize:], crcTable()))
		}
		root, err := Decode(data, [32]byte{})
		if err != nil {
			return
		}
		again, err := Encode(root, [32]byte{})
		if err != nil {
			t.Fatal(err)
		}
		back, err := Decode(again, [32]byte{})
		if err != nil {
			t.Fatal(err)
		}
		if err := sameNode(root, back); err != nil {
			t.Fatal(err)
		}
	})
}

func BenchmarkDecode(b *testing.B) {
	spec := gentree.FromEnv()
	root := gentree.Tree(spec)
	root.Sort()
	var text bytes.Buffer
	if err := erofs.WriteDump(&text, root); err != nil {
		b.Fatal(err)
	}
	data, err := Encode(root, [32]byte{})
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("%d entries: dump %d bytes, node file %d bytes", spec.Entries(), text.Len(), len(data))
	b.Run("nodefile", func(b *testing.B) {
		for b.Loop() {
			if _, err := Decode(data, [32]byte{}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("dump", func(b *testing.B) {
		for b.Loop() {
			if _, err := erofs.ParseDumpBytes(text.Bytes(), erofs.DumpOptions{}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encode", func(b *testing.B) {
		for b.Loop() {
			if _, err := Encode(root, [32]byte{}); err != nil {
				b.Fatal(err)
			}
		}
	})
}
