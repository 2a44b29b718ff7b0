package oci

import (
	"fmt"

	"github.com/mossfs/mossfs/tree"
)

// mergedUsrLinks are the links moss makes at the root of a merged-/usr
// system (moss's create_root_links): name -> target. lib32 is made only
// when usr/lib32 exists.
var mergedUsrLinks = []struct{ name, target string }{
	{"bin", "usr/bin"},
	{"lib", "usr/lib"},
	{"lib32", "usr/lib32"},
	{"lib64", "usr/lib"},
	{"sbin", "usr/sbin"},
}

// RootFS returns the root filesystem of an OS transaction whose image tree
// (the /usr tree) is usr: a root directory holding usr/ and the merged-/usr
// links bin, sbin, lib, lib64 (and lib32 when usr/lib32 exists). usr is
// not copied; it becomes the child "usr" of the new root. The root and the
// links take usr's own mtime and root ownership, so nothing depends on the
// time of the export. There is no /etc: an OS image's /etc is the host's.
func RootFS(usr *tree.Node) (*tree.Node, error) {
	if !usr.IsDir() {
		return nil, fmt.Errorf("root filesystem: the /usr tree is not a directory")
	}
	usr.Sort()
	root := tree.NewDir("", 0o755)
	root.Mtime = usr.Mtime
	for _, l := range mergedUsrLinks {
		if l.name == "lib32" && usr.Lookup("lib32") == nil {
			continue
		}
		root.AddChild(&tree.Node{Name: l.name, Mode: tree.TypeLink | 0o777, Nlink: 1,
			Target: l.target, Size: uint64(len(l.target)), Mtime: usr.Mtime})
	}
	usr.Name = "usr"
	usr.LinkTo = nil
	root.AddChild(usr)
	root.SortChildren()
	return root, nil
}
