package exporttest

import (
	"fmt"
	"io"
	"slices"

	"github.com/mossfs/mossfs/oci"
	"github.com/mossfs/mossfs/tree"
)

// inlineMax is the largest regular file an import keeps inline in the
// image (dirimport.InlineMax; the same rule as libcomposefs).
const inlineMax = 64

// importView states independently of package layer what tree an import of
// root's exported layer must give:
// a copy in which the root is root:root 0755 with mtime 0 (a layer has no
// entry for it), the first name of a hardlinked inode in sorted order owns
// it, regular files of 1..inlineMax bytes are inline and larger ones are
// payloads, and sockets (which a tar cannot carry) are gone.
func importView(root *tree.Node, open oci.ContentOpener) (*tree.Node, error) {
	root.Sort()
	out := tree.NewDir("", 0o755)
	owners := map[*tree.Node]*tree.Node{} // source inode -> its first copy
	var walk func(src, dst *tree.Node) error
	walk = func(src, dst *tree.Node) error {
		for _, c := range src.Children {
			ino := c.Inode()
			if ino.Type() == tree.TypeSock {
				continue
			}
			if o, ok := owners[ino]; ok && ino.Type() == tree.TypeReg {
				dst.AddChild(&tree.Node{Name: c.Name, LinkTo: o})
				o.Nlink++
				continue
			}
			n := &tree.Node{Name: c.Name, Mode: ino.Mode, UID: ino.UID, GID: ino.GID, Nlink: 1,
				Mtime: ino.Mtime, Size: ino.Size, Rdev: ino.Rdev, Target: ino.Target,
				Content: ino.Content, Payload: ino.Payload, Digest: ino.Digest,
				Xattrs: slices.Clone(ino.Xattrs)}
			dst.AddChild(n)
			switch ino.Type() {
			case tree.TypeDir:
				n.Nlink = 2
				if err := walk(ino, n); err != nil {
					return err
				}
			case tree.TypeReg:
				owners[ino] = n
				if err := inlineRule(n, open); err != nil {
					return fmt.Errorf("%s: %w", c.Path(), err)
				}
			default:
				n.Content, n.Payload, n.Digest = nil, "", nil
			}
		}
		return nil
	}
	if err := walk(root, out); err != nil {
		return nil, err
	}
	return out, nil
}

// inlineRule makes n inline or external as an import would.
func inlineRule(n *tree.Node, open oci.ContentOpener) error {
	switch {
	case n.Size == 0:
		n.Content, n.Payload, n.Digest = nil, "", nil
	case n.Size <= inlineMax && n.Content == nil:
		r, err := open(n)
		if err != nil {
			return err
		}
		defer r.Close()
		b, err := io.ReadAll(io.LimitReader(r, int64(n.Size)+1))
		if err != nil {
			return err
		}
		if uint64(len(b)) != n.Size {
			return fmt.Errorf("content is %d bytes, the image says %d", len(b), n.Size)
		}
		n.Content, n.Payload, n.Digest = b, "", nil
	case n.Size > inlineMax && n.Content != nil:
		return fmt.Errorf("%d bytes inline: larger than an import inlines", n.Size)
	}
	return nil
}
