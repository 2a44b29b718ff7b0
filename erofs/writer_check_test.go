package erofs

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mossfs/mossfs/tree"
)

// fsckImage runs erofs-utils' fsck.erofs on an image (an independent
// checker of the on-disk structures). With extract it also decodes every
// file's data, which only works when no file is external (fsck.erofs 1.5
// tries to read chunk holes).
func fsckImage(t testing.TB, name string, img []byte, extract bool) {
	t.Helper()
	fsck, err := exec.LookPath("fsck.erofs")
	if err != nil {
		t.Fatalf("fsck.erofs not installed (scripts/install-deps.sh installs erofs-utils): %v", err)
	}
	p := filepath.Join(t.TempDir(), "image.cfs")
	if err := os.WriteFile(p, img, 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{p}
	if extract {
		args = []string{"--extract", p}
	}
	out, err := exec.Command(fsck, args...).CombinedOutput()
	if err != nil || strings.Contains(string(out), "<E>") {
		t.Errorf("%s: fsck.erofs %v: %v\n%s", name, args[:len(args)-1], err, out)
	}
}

// hasExternalFiles reports whether the tree has a regular file whose data
// lives in the object store.
func hasExternalFiles(root *tree.Node) bool {
	found := false
	_ = root.Walk(func(n *tree.Node) error {
		if n.LinkTo == nil && n.Mode&tree.TypeMask == tree.TypeReg && n.Size > 0 && n.Content == nil {
			found = true
		}
		return nil
	})
	return found
}

// snapshotTree renders every field of every node (children in slice order,
// pointers as paths), to check that the writer leaves its input alone.
func snapshotTree(root *tree.Node) string {
	var b strings.Builder
	_ = root.Walk(func(n *tree.Node) error {
		link := ""
		if n.LinkTo != nil {
			link = n.LinkTo.Path()
		}
		fmt.Fprintf(&b, "%q %p link=%s mode=%o %d:%d nlink=%d mtime=%v size=%d rdev=%d target=%q content=%q payload=%q digest=%x nkids=%d cap=%d\n",
			n.Path(), n.Parent, link, n.Mode, n.UID, n.GID, n.Nlink, n.Mtime, n.Size, n.Rdev, n.Target, n.Content, n.Payload, n.Digest, len(n.Children), cap(n.Children))
		for _, c := range n.Children {
			fmt.Fprintf(&b, " child %q\n", c.Name)
		}
		for _, x := range n.Xattrs {
			fmt.Fprintf(&b, " xattr %q=%q\n", x.Name, x.Value)
		}
		return nil
	})
	return b.String()
}
