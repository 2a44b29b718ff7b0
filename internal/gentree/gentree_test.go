package gentree

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/mossfs/mossfs/tree"
)

func TestTreeMatchesSpec(t *testing.T) {
	s := Small
	root := Tree(s)
	var dirs, files, links int
	var bytes uint64
	_ = root.Walk(func(n *tree.Node) error {
		switch n.Type() {
		case tree.TypeDir:
			dirs++
		case tree.TypeReg:
			files++
			bytes += n.Size
		case tree.TypeLink:
			links++
		}
		return nil
	})
	if dirs != s.Dirs+1 || files != s.Files || links != s.Symlinks {
		t.Fatalf("got %d dirs %d files %d links, want %d/%d/%d", dirs, files, links, s.Dirs+1, s.Files, s.Symlinks)
	}
	if bytes < uint64(s.TotalBytes)*99/100 || bytes > uint64(s.TotalBytes) {
		t.Fatalf("content %d bytes, want about %d", bytes, s.TotalBytes)
	}
	if err := tree.Equal(root, Tree(s)); err != nil {
		t.Fatalf("not deterministic: %v", err)
	}
}

func TestMaterialize(t *testing.T) {
	dir := t.TempDir()
	s := Tiny
	n, err := Materialize(dir, s)
	if err != nil {
		t.Fatal(err)
	}
	var sum int64
	for _, f := range List(s) {
		st, err := os.Lstat(filepath.Join(dir, f.Path))
		if err != nil {
			t.Fatal(err)
		}
		if f.Mode&tree.TypeMask == tree.TypeReg {
			if st.Size() != f.Size {
				t.Fatalf("%s: size %d want %d", f.Path, st.Size(), f.Size)
			}
			sum += st.Size()
			if f.Size > 0 && f.Index == 3 {
				b, _ := os.ReadFile(filepath.Join(dir, f.Path))
				if string(b) != string(Content(f)) {
					t.Fatalf("%s: content differs", f.Path)
				}
			}
		}
	}
	if sum != n {
		t.Fatalf("wrote %d bytes, files hold %d", n, sum)
	}
}
