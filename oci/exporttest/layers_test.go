package exporttest

import (
	"math/rand/v2"
	"strings"

	"github.com/mossfs/mossfs/tree"
)

func regFile(name string, content []byte, mode uint32, mtime int64) *tree.Node {
	return &tree.Node{Name: name, Mode: tree.TypeReg | mode, Nlink: 1, Size: uint64(len(content)), Content: content, Mtime: tree.Timespec{Sec: mtime}}
}

func randomBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 7))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// composefsLayers builds an image's layers as trees: a base layer with
// hardlinks, xattrs, a symlink, small and large files, and a second layer
// that replaces, adds, and (with whiteout) deletes a file of the first.
func composefsLayers(whiteout bool) []*tree.Node {
	l1 := tree.NewDir("", 0o755)
	a := tree.NewDir("a", 0o755)
	a.Mtime = tree.Timespec{Sec: 1_600_000_000}
	f1 := regFile("file1", []byte(strings.Repeat("shared inode\n", 20)), 0o644, 1_600_000_001)
	f1.SetXattr("user.mossfs", []byte("xattr value"))
	a.AddChild(f1)
	a.AddChild(&tree.Node{Name: "file2", LinkTo: f1})
	a.AddChild(&tree.Node{Name: "link", Mode: tree.TypeLink | 0o777, Nlink: 1, Target: "file1", Size: 5, Mtime: tree.Timespec{Sec: 1_600_000_002}})
	a.AddChild(regFile("tiny", []byte("tiny\n"), 0o600, 1_600_000_003))
	b := tree.NewDir("b", 0o750)
	b.Mtime = tree.Timespec{Sec: 1_600_000_004}
	b.AddChild(regFile("big", randomBytes(1, 300<<10), 0o755, 1_600_000_005))
	b.AddChild(regFile("old", randomBytes(2, 5000), 0o644, 1_600_000_006))
	l1.AddChild(a)
	l1.AddChild(b)

	l2 := tree.NewDir("", 0o755)
	b2 := tree.NewDir("b", 0o750)
	b2.Mtime = tree.Timespec{Sec: 1_600_000_010}
	b2.AddChild(regFile("old", randomBytes(3, 7000), 0o640, 1_600_000_011))
	b2.AddChild(regFile("new", randomBytes(4, 9000), 0o644, 1_600_000_012))
	l2.AddChild(b2)
	if whiteout {
		a2 := tree.NewDir("a", 0o755)
		a2.Mtime = tree.Timespec{Sec: 1_600_000_013}
		a2.AddChild(regFile(".wh.tiny", nil, 0o644, 0))
		l2.AddChild(a2)
	}
	return []*tree.Node{l1, l2}
}
