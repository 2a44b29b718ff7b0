package erofs

import (
	"errors"
	"path"
	"slices"
	"strings"

	"github.com/mossfs/mossfs/tree"
)

// Tree reads the whole image and returns the source tree it was built from
// (what a composefs dump describes), following libcomposefs's image loader
// (lcfs_load_node_from_image, composefs 1.0.8):
//
//   - real whiteouts (char 0:0: the 256 root stubs) are skipped;
//   - trusted.overlay.redirect becomes Payload (leading "/" removed) and
//     trusted.overlay.metacopy becomes Digest, on regular files;
//   - a regular file with trusted.overlay.overlay.whiteout becomes a user
//     whiteout again (char 0:0, size 0); trusted.overlay.overlay.whiteouts,
//     user.overlay.whiteout and user.overlay.whiteouts are dropped;
//   - trusted.overlay.overlay.X becomes trusted.overlay.X; every other
//     trusted.overlay.* (the root's opaque "y") is dropped. As in
//     libcomposefs, the version-1 opaque markers of a directory holding
//     whiteouts therefore come back as trusted.overlay.opaque="x" and
//     user.overlay.opaque="x" (writing the tree again gives the same bytes);
//   - an inode reached a second time (same nid) is a hardlink: the first name
//     in depth-first order of sorted names owns it, later ones get LinkTo;
//   - directory Size is the EROFS i_size; Nlink is kept as stored.
//
// Unlike libcomposefs, a directory reached twice (cycle or hardlinked
// directory), duplicate names, or names with "/" are errors.
func (img *Image) Tree() (*tree.Node, error) {
	root, _, err := img.tree(false)
	return root, err
}

// tree builds the source tree; with dumpOrder it also returns, for nodes
// whose xattrs libcomposefs keeps in another order than sorted, that order
// (composefs-info dump prints it).
func (img *Image) tree(dumpOrder bool) (*tree.Node, map[*tree.Node][]tree.Xattr, error) {
	b := &treeBuilder{img: img, seen: make(map[uint64]*tree.Node)}
	if dumpOrder {
		b.order = make(map[*tree.Node][]tree.Xattr)
	}
	root, skip, err := b.node(img.RootNid(), 0)
	if err != nil {
		return nil, nil, err
	}
	if skip || root.Mode&tree.TypeMask != tree.TypeDir {
		return nil, nil, img.corruptf("root inode %d is not a directory", img.RootNid())
	}
	return root, b.order, nil
}

type treeBuilder struct {
	img   *Image
	seen  map[uint64]*tree.Node
	order map[*tree.Node][]tree.Xattr
}

// node builds the node for nid; skip reports a real whiteout, which has no
// node.
func (b *treeBuilder) node(nid uint64, depth int) (n *tree.Node, skip bool, err error) {
	img := b.img
	if owner, ok := b.seen[nid]; ok {
		if owner.Mode&tree.TypeMask == tree.TypeDir {
			return nil, false, img.corruptf("directory inode %d reached twice: directory cycle or hardlinked directory", nid)
		}
		return &tree.Node{LinkTo: owner}, false, nil
	}
	ino, err := img.base(nid)
	if err != nil {
		return nil, false, err
	}
	if isWhiteoutStub(ino) {
		// A hardlinked whiteout would be a dangling alias (libcomposefs
		// rejects it too).
		if ino.Nlink > 1 {
			return nil, false, img.corruptf("whiteout inode %d has nlink %d", nid, ino.Nlink)
		}
		return nil, true, nil
	}
	n = &tree.Node{
		Mode:  ino.Mode,
		UID:   ino.UID,
		GID:   ino.GID,
		Nlink: ino.Nlink,
		Mtime: ino.Mtime,
		Size:  ino.Size,
		Rdev:  ino.Rdev,
	}
	b.seen[nid] = n
	switch ino.Mode & tree.TypeMask {
	case tree.TypeDir:
		if depth >= maxDepth {
			return nil, false, img.corruptf("directories nested deeper than %d levels", maxDepth)
		}
		if err := b.children(n, ino, depth); err != nil {
			return nil, false, err
		}
	case tree.TypeLink:
		if n.Target, err = img.symlinkTarget(ino); err != nil {
			return nil, false, err
		}
	case tree.TypeReg:
		if ino.Size != 0 && ino.layout != LayoutChunkBased {
			if n.Content, err = img.content(ino); err != nil {
				return nil, false, err
			}
		}
	}
	if err := img.decodeXattrs(ino); err != nil {
		return nil, false, err
	}
	var cOrder []tree.Xattr
	for _, x := range ino.rawXattrs {
		name := x.Name
		isReg := n.Mode&tree.TypeMask == tree.TypeReg
		switch {
		case name == XattrRedirect:
			if isReg {
				n.Payload = payloadOfRedirect(x.Value)
			}
			continue
		case name == XattrMetacopy:
			if isReg && len(x.Value) == MetacopySize {
				n.Digest = slices.Clone(x.Value[MetacopyHeaderSize:])
			}
			continue
		case name == XattrEscWhiteout && isReg:
			n.Mode = n.Mode&^tree.TypeMask | tree.TypeChar
			n.Rdev, n.Size, n.Content = 0, 0, nil
			continue
		case name == XattrEscWhiteouts || name == XattrUserWhiteout || name == XattrUserWhiteouts:
			continue
		case strings.HasPrefix(name, XattrOverlayEscPrefix):
			name = XattrOverlayPrefix + name[len(XattrOverlayEscPrefix):]
		case strings.HasPrefix(name, XattrOverlayPrefix):
			continue
		}
		n.SetXattr(name, x.Value)
		if b.order != nil {
			cOrder = cSetXattr(cOrder, tree.Xattr{Name: name, Value: x.Value})
		}
	}
	if b.order != nil && !slices.IsSortedFunc(cOrder, func(a, b tree.Xattr) int { return strings.Compare(a.Name, b.Name) }) {
		b.order[n] = cOrder
	}
	return n, false, nil
}

// cSetXattr replaces or appends like lcfs_node_set_xattr: an existing entry
// is removed by moving the last one into its slot, then the new one is
// appended.
func cSetXattr(xs []tree.Xattr, x tree.Xattr) []tree.Xattr {
	for i := range xs {
		if xs[i].Name == x.Name {
			xs[i] = xs[len(xs)-1]
			xs = xs[:len(xs)-1]
			break
		}
	}
	return append(xs, x)
}

func (b *treeBuilder) children(n *tree.Node, ino *Inode, depth int) error {
	img := b.img
	raw, err := img.readDirRaw(ino)
	if err != nil {
		return err
	}
	ents := raw[:0:0]
	for _, d := range raw {
		if d.name != "." && d.name != ".." {
			ents = append(ents, d)
		}
	}
	slices.SortStableFunc(ents, func(a, b rawDirent) int { return strings.Compare(a.name, b.name) })
	for i, d := range ents {
		if i > 0 && ents[i-1].name == d.name {
			return img.corruptf("directory inode %d: duplicate entry %q", ino.Nid, d.name)
		}
		c, skip, err := b.node(d.nid, depth+1)
		if err != nil {
			var pe *treePathError
			if !errors.As(err, &pe) {
				err = &treePathError{image: img.name, path: path.Join(n.Path(), d.name), err: err}
			}
			return err
		}
		if skip {
			continue
		}
		c.Name = d.name
		n.AddChild(c)
	}
	return nil
}

// treePathError names the path at which Tree met a problem.
type treePathError struct {
	image, path string
	err         error
}

// Error reads "IMAGE: PATH: problem".
func (e *treePathError) Error() string {
	msg := e.err.Error()
	if e.image != "" && strings.HasPrefix(msg, e.image+": ") {
		return e.image + ": " + e.path + ": " + msg[len(e.image)+2:]
	}
	return e.path + ": " + msg
}
func (e *treePathError) Unwrap() error { return e.err }
