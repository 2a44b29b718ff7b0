package erofs

import (
	"testing"

	"github.com/mossfs/mossfs/tree"
)

// layoutOf computes the layout of a positive asset.
func layoutOf(t *testing.T, name string) (*layout, *tree.Node) {
	t.Helper()
	positive, _ := composefsAssets(t)
	for _, a := range positive {
		if a.name == name {
			root := parseAsset(t, a)
			l, err := computeLayout(root, assetWriteOptions(a))
			if err != nil {
				t.Fatal(err)
			}
			return l, root
		}
	}
	t.Fatalf("no asset %s", name)
	return nil, nil
}

// inodeOf returns the layout of the inode at path.
func (l *layout) inodeOf(t *testing.T, root *tree.Node, path string) *inode {
	t.Helper()
	n := root.Lookup(path)
	for i := range l.inodes {
		if l.inodes[i].src == n {
			return &l.inodes[i]
		}
	}
	t.Fatalf("%s: no inode", path)
	return nil
}

// TestLayoutRules checks the placement rules on the examples of the
// reference (§4, §6.5), as computed before any byte is written.
func TestLayoutRules(t *testing.T) {
	l, root := layoutOf(t, "special.dump")
	if len(l.inodes) != 266 || l.buildTime.Sec != 1633950376 || l.size/BlockSize != 7 || l.inodesEnd/BlockSize != 2 {
		t.Errorf("special.dump: inos %d, build time %v, blocks %d, xattr_blkaddr %d; want 266, 1633950376, 7, 2",
			len(l.inodes), l.buildTime, l.size/BlockSize, l.inodesEnd/BlockSize)
	}
	if l.inodes[0].pos != InodesStart {
		t.Errorf("root at %d, want %d", l.inodes[0].pos, InodesStart)
	}
	for path, want := range map[string][2]uint32{ // n_blocks, tail of inline files
		"inline":        {0, 15},
		"inline-large1": {1, 0},
		"inline-large2": {1, 0},
		"inline-large3": {1, 1},
	} {
		in := l.inodeOf(t, root, path)
		if in.nBlocks != want[0] || uint32(in.tail) != want[1] {
			t.Errorf("%s: %d blocks + %d inline, want %d + %d", path, in.nBlocks, in.tail, want[0], want[1])
		}
	}
	if w := l.inodeOf(t, root, "whiteout"); w.typ() != tree.TypeReg || w.ftype != FileTypeReg {
		t.Errorf("user whiteout stored as type %o", w.typ())
	}
	// Shared xattrs in descending order.
	var names []string
	for _, x := range l.shared {
		names = append(names, l.names[l.xattrs[x].name].name)
	}
	for i := 1; i < len(names); i++ {
		if names[i-1] < names[i] {
			t.Errorf("shared table not descending: %q", names)
		}
	}

	l, root = layoutOf(t, "longlink.dump")
	for _, c := range []struct {
		path string
		nid  uint64
	}{{"big-but-not-max-link", 512}, {"max-link", 768}} {
		if in := l.inodeOf(t, root, c.path); in.pos/SlotSize != c.nid {
			t.Errorf("longlink %s at nid %d, want %d", c.path, in.pos/SlotSize, c.nid)
		}
	}

	l, root = layoutOf(t, "bigfile.dump")
	in := l.inodeOf(t, root, "bigfile")
	if in.pos/SlotSize != 253 || (in.pos+in.recordSize()+uint64(in.xattrSize))%BlockSize != 0 || in.tail != 4096 {
		t.Errorf("bigfile at nid %d (tail %d), want nid 253 with its 1024-entry chunk table at a block start", in.pos/SlotSize, in.tail)
	}

	l, root = layoutOf(t, "honggfuzz-bigfile-with-acl.dump")
	in = l.inodeOf(t, root, "something-with-acls-and-overlay")
	if in.pos/SlotSize != 384 || in.flags&inodeChunkBlock == 0 || in.nBlocks != 1 || in.tail != 0 || !l.hasACL {
		t.Errorf("acl bigfile at nid %d, flags %b, %d blocks, tail %d, ACL %v; want nid 384 and its chunk table in a data block",
			in.pos/SlotSize, in.flags, in.nBlocks, in.tail, l.hasACL)
	}
}
