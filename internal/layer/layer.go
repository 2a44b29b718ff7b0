// Package layer turns an overlayfs upper directory into a layer tree and
// applies layer trees to a tree: how the changes a transaction trigger made
// under its writable /usr are folded into the transaction's image.
//
// A layer is a tree.Node tree in a normal form that needs no lower layer to
// be read: every entry is one of
//
//	whiteout           a character device 0/0: the path is deleted
//	opaque directory   a directory with the xattr OpaqueXattr: it replaces
//	                   the lower directory with exactly its own contents
//	directory          merged with the lower directory of the same path
//	anything else      replaces the lower entry (file, symlink, device)
//
// FromUpper reduces every form an overlay upper layer holds to these:
// whiteouts (char 0/0), opaque directories (trusted.overlay.opaque=y),
// metacopy-only copy-ups (trusted.overlay.metacopy: the data is the lower
// file's, found through trusted.overlay.redirect or the same path, or the
// data-only layer's object the redirect names) and renamed directories
// (trusted.overlay.redirect: the lower directory's contents are copied in
// and the result made opaque). Other trusted.overlay.* xattrs (origin,
// impure, nlink, uuid) are bookkeeping and dropped.
package layer

import (
	"encoding/hex"
	"fmt"
	"path"
	"regexp"
	"slices"
	"strings"
	"sync"

	"github.com/mossfs/mossfs/tree"
)

// OpaqueXattr marks an opaque directory of a layer. It never reaches an image:
// Apply strips it.
const OpaqueXattr = "trusted.mossfs.opaque"

const (
	ovlPrefix   = "trusted.overlay."
	ovlOpaque   = "trusted.overlay.opaque"
	ovlRedirect = "trusted.overlay.redirect"
	ovlMetacopy = "trusted.overlay.metacopy"
)

// Lookup resolves an absolute path ("/lib/modules") in the lower layers a
// layer was made over; nil when there is no such entry.
type Lookup func(p string) *tree.Node

// IsWhiteout reports whether n is an overlay whiteout (char device 0/0).
func IsWhiteout(n *tree.Node) bool {
	return n.LinkTo == nil && n.Mode&tree.TypeMask == tree.TypeChar && n.Rdev == 0
}

// IsOpaque reports whether a layer directory is opaque.
func IsOpaque(n *tree.Node) bool {
	v, ok := n.Xattr(OpaqueXattr)
	return ok && string(v) == "y"
}

// objectPath is compiled at first use, not at every start of the programs
// that link this package.
var objectPath = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^/?[0-9a-f]{2}/[0-9a-f]{62}$`) })

// FromUpper converts the tree of an upper directory (as dirimport reads it,
// trusted.* xattrs included, contents stored) into a layer, in place.
func FromUpper(upper *tree.Node, lower Lookup) (*tree.Node, error) {
	upper.Xattrs = nil
	if err := fromDir(upper, "/", lower); err != nil {
		return nil, err
	}
	return upper, nil
}

// fromDir normalises the children of upper directory d, whose lower
// counterpart is at origin ("" when it has none: opaque or new).
func fromDir(d *tree.Node, origin string, lower Lookup) error {
	for _, c := range d.Children {
		childOrigin := ""
		if origin != "" {
			childOrigin = path.Join(origin, c.Name)
		}
		in := c.Inode()
		switch {
		case c.LinkTo != nil:
			// A hardlink shares its owner's normalised inode.
		case IsWhiteout(c):
			c.Xattrs = nil
			c.Mode = tree.TypeChar
		case in.Mode&tree.TypeMask == tree.TypeDir:
			opaque := xattrIs(c, ovlOpaque, "y")
			redirect, redirected := c.Xattr(ovlRedirect)
			stripOverlay(c)
			switch {
			case opaque && (childOrigin == "" || !isDir(lower(childOrigin))):
				// A new directory: overlayfs marks those opaque too, but
				// there is nothing lower to hide; it merges like any other.
				childOrigin = ""
			case opaque:
				c.SetXattr(OpaqueXattr, []byte("y"))
				childOrigin = ""
			case redirected:
				from := resolveRedirect(string(redirect), origin)
				src := lower(from)
				if src == nil || !src.IsDir() {
					return fmt.Errorf("%s: renamed from %s, which the lower layers do not hold", c.Path(), from)
				}
				if err := fromDir(c, from, lower); err != nil {
					return err
				}
				merged := copyTree(src)
				applyDir(merged, c, nil)
				c.Children = nil
				for _, m := range merged.Children {
					c.AddChild(m)
				}
				c.SetXattr(OpaqueXattr, []byte("y"))
				continue
			}
			if err := fromDir(c, childOrigin, lower); err != nil {
				return err
			}
		case in.Mode&tree.TypeMask == tree.TypeReg && hasXattr(in, ovlMetacopy):
			redirect, redirected := in.Xattr(ovlRedirect)
			stripOverlay(in)
			from := childOrigin
			if redirected {
				from = resolveRedirect(string(redirect), origin)
			}
			var src *tree.Node
			if from != "" {
				src = lower(from)
			}
			switch {
			case src != nil && src.Inode().Mode&tree.TypeMask == tree.TypeReg:
				s := src.Inode()
				in.Size, in.Content, in.Payload, in.Digest = s.Size, s.Content, s.Payload, s.Digest
			case redirected && objectPath().MatchString(string(redirect)):
				// The data-only layer's object itself.
				p := strings.TrimPrefix(string(redirect), "/")
				d, err := hex.DecodeString(strings.ReplaceAll(p, "/", ""))
				if err != nil {
					return fmt.Errorf("%s: bad redirect %q", c.Path(), redirect)
				}
				in.Payload, in.Content, in.Digest = p, nil, d
			default:
				return fmt.Errorf("%s: metadata-only copy-up of %q, which the lower layers do not hold", c.Path(), from)
			}
		default:
			stripOverlay(in)
		}
	}
	return nil
}

// resolveRedirect resolves a redirect xattr: absolute, or a name relative
// to the lower directory of the entry's parent (dir).
func resolveRedirect(r, dir string) string {
	if strings.HasPrefix(r, "/") {
		return path.Clean(r)
	}
	if dir == "" {
		dir = "/"
	}
	return path.Join(dir, r)
}

func isDir(n *tree.Node) bool { return n != nil && n.IsDir() }

func xattrIs(n *tree.Node, name, val string) bool {
	v, ok := n.Xattr(name)
	return ok && string(v) == val
}

func hasXattr(n *tree.Node, name string) bool {
	_, ok := n.Xattr(name)
	return ok
}

func stripOverlay(n *tree.Node) {
	n.Xattrs = slices.DeleteFunc(n.Xattrs, func(x tree.Xattr) bool { return strings.HasPrefix(x.Name, ovlPrefix) })
}

// copyTree deep-copies a subtree; hardlinks inside it stay hardlinks, those
// to inodes outside it become copies of the inode.
func copyTree(n *tree.Node) *tree.Node {
	copies := map[*tree.Node]*tree.Node{}
	var cp func(n *tree.Node) *tree.Node
	cp = func(n *tree.Node) *tree.Node {
		c := *n
		c.Parent, c.Children, c.LinkTo = nil, nil, nil
		c.Xattrs = slices.Clone(n.Xattrs)
		if n.LinkTo != nil {
			if owner, ok := copies[n.LinkTo]; ok {
				c = tree.Node{Name: n.Name, LinkTo: owner}
			} else {
				in := *n.LinkTo
				in.Name, in.Parent, in.Children, in.LinkTo = n.Name, nil, nil, nil
				in.Xattrs = slices.Clone(n.LinkTo.Xattrs)
				c = in
				copies[n.LinkTo] = &c
			}
		} else {
			copies[n] = &c
		}
		for _, ch := range n.Children {
			c.AddChild(cp(ch))
		}
		return &c
	}
	return cp(n)
}

// Entry is a path a layer produces or deletes.
type Entry struct {
	Path    string
	Deleted bool
	Dir     bool // an opaque directory (replaces what was there)
}

// Entries lists what a layer changes: every whiteout, every opaque
// directory and every entry that is not a merged directory, in tree order.
func Entries(l *tree.Node) []Entry {
	var out []Entry
	_ = l.Walk(func(n *tree.Node) error {
		if n.Parent == nil {
			return nil
		}
		switch {
		case IsWhiteout(n):
			out = append(out, Entry{Path: n.Path(), Deleted: true})
		case n.IsDir() && IsOpaque(n):
			out = append(out, Entry{Path: n.Path(), Dir: true})
		case n.IsDir():
		default:
			out = append(out, Entry{Path: n.Path()})
		}
		return nil
	})
	return out
}

// Apply applies a layer to root in place; the layer's nodes move into root
// (a layer is applied once). stamp, if set, is called on every node that the
// layer adds or replaces (not on merged directories that existed).
func Apply(root, l *tree.Node, stamp func(*tree.Node)) {
	root.Sort()
	l.Sort()
	applyDir(root, l, stamp)
}

func applyDir(b, l *tree.Node, stamp func(*tree.Node)) {
	for _, lc := range l.Children {
		i, found := slices.BinarySearchFunc(b.Children, lc.Name, func(c *tree.Node, s string) int { return strings.Compare(c.Name, s) })
		var bc *tree.Node
		if found {
			bc = b.Children[i]
		}
		switch {
		case IsWhiteout(lc):
			if found {
				b.Children = slices.Delete(b.Children, i, i+1)
			}
		case lc.LinkTo == nil && lc.IsDir() && !IsOpaque(lc) && bc != nil && bc.LinkTo == nil && bc.IsDir():
			// Merge: the upper's copy of the directory carries its mode,
			// owner and xattrs (changed or not); the time stays.
			bc.Mode, bc.UID, bc.GID = lc.Mode, lc.UID, lc.GID
			bc.Xattrs = lc.Xattrs
			applyDir(bc, lc, stamp)
		default:
			n := lc
			n.RemoveXattr(OpaqueXattr)
			dropWhiteouts(n)
			if stamp != nil {
				_ = n.Walk(func(x *tree.Node) error {
					if x.LinkTo == nil {
						stamp(x)
					}
					return nil
				})
			}
			n.Parent = b
			if found {
				b.Children[i] = n
			} else {
				b.Children = slices.Insert(b.Children, i, n)
			}
		}
	}
}

// dropWhiteouts removes whiteouts and opaque marks below a directory that
// is new (nothing lower to delete from).
func dropWhiteouts(n *tree.Node) {
	n.RemoveXattr(OpaqueXattr)
	n.Children = slices.DeleteFunc(n.Children, IsWhiteout)
	for _, c := range n.Children {
		if c.LinkTo == nil && c.IsDir() {
			dropWhiteouts(c)
		}
	}
}

// View returns a Lookup over base with layers (bottom first) applied. The
// merged tree is built on the first lookup, from copies: base and the layers
// stay as they are.
func View(base *tree.Node, layers []*tree.Node) Lookup {
	var view *tree.Node
	return func(p string) *tree.Node {
		if view == nil {
			view = copyTree(base)
			for _, l := range layers {
				Apply(view, copyTree(l), nil)
			}
		}
		n := view
		for name := range strings.SplitSeq(strings.Trim(p, "/"), "/") {
			if name == "" {
				continue
			}
			if !n.IsDir() {
				return nil
			}
			n = n.Child(name)
			if n == nil {
				return nil
			}
		}
		return n
	}
}
