package fusefs

import (
	"fmt"
	"slices"
	"strings"

	"github.com/mossfs/mossfs/erofs"
	"github.com/mossfs/mossfs/tree"
)

// Source is the metadata of one transaction, addressed by node number (the
// EROFS nid for an image). It is what the FUSE server serves. A Source never
// changes while it is served, so every answer may be cached forever.
//
// A Source shows what the kernel overlay shows for the image: no root stubs
// or overlay whiteouts, escaped trusted.overlay.overlay.X as trusted.overlay.X,
// no trusted.overlay.metacopy/redirect or other overlay internals.
type Source interface {
	// RootNid returns the node number of the root directory.
	RootNid() uint64
	// Inode returns the inode with node number nid.
	Inode(nid uint64) (*Inode, error)
	// Attr returns what stat shows of inode nid. It fails where Inode
	// fails, but may be much cheaper (no xattrs, target or payload).
	Attr(nid uint64) (Attr, error)
	// ReadDir returns the entries of directory nid sorted by name in byte
	// order, without "." and "..".
	ReadDir(nid uint64) ([]Dirent, error)
	// ReadAt reads the inline content of regular file nid.
	ReadAt(nid uint64, p []byte, off int64) (int, error)
}

// Inode is one inode of a Source.
type Inode struct {
	Nid   uint64
	Mode  uint32 // st_mode with type bits
	UID   uint32
	GID   uint32
	Nlink uint32
	Size  uint64
	Mtime tree.Timespec
	Rdev  uint32 // kernel encoding
	// Xattrs in the overlay view, sorted by name.
	Xattrs []tree.Xattr
	// Target of a symlink.
	Target string
	// Payload is an external file's object path relative to the object
	// directory ("ab/cdef…"), Digest its fs-verity digest (nil: unknown).
	Payload string
	Digest  []byte
	// HasInline is set when a regular file's content is in the image (read
	// it with Source.ReadAt); otherwise the content is the object at Payload,
	// or empty.
	HasInline bool
}

// Attr is what stat shows of an inode of a Source: the image reader's own
// type, so that an image source hands it over without a copy.
type Attr = erofs.Attr

// Attr returns what stat shows of the inode.
func (in *Inode) Attr() Attr {
	return Attr{
		Nid: in.Nid, Mode: in.Mode, UID: in.UID, GID: in.GID, Nlink: in.Nlink,
		Size: in.Size, Mtime: in.Mtime, Rdev: in.Rdev,
		HasInline: in.HasInline, HasPayload: in.Payload != "",
	}
}

// Dirent is one directory entry of a Source: its name, node number and
// file type bits (tree.TypeDir …).
type Dirent = erofs.DirEntry

// TreeSource serves an in-memory tree (the source tree of an image: user
// whiteouts as char 0:0 devices, unescaped xattrs, external files with
// Payload and Digest) the way the kernel overlay shows its image. Node
// numbers are assigned in depth-first order; hardlinks share their target's.
// It is for tests and for trees that never went through an image.
type TreeSource struct {
	inodes []*Inode
	dirs   map[uint64][]Dirent
	inline map[uint64][]byte
}

var _ Source = (*TreeSource)(nil)

// NewTreeSource indexes root. The tree must be sorted and must not change
// afterwards.
func NewTreeSource(root *tree.Node) (*TreeSource, error) {
	s := &TreeSource{dirs: map[uint64][]Dirent{}, inline: map[uint64][]byte{}}
	nids := map[*tree.Node]uint64{}
	// Owners first, so that hardlinks (which may come before their target
	// in walk order) find their nid.
	err := root.Walk(func(n *tree.Node) error {
		if n.LinkTo != nil {
			return nil
		}
		nid := uint64(len(s.inodes))
		nids[n] = nid
		s.inodes = append(s.inodes, treeInode(n, nid))
		if n.Content != nil && n.Type() == tree.TypeReg {
			s.inline[nid] = n.Content
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	err = root.Walk(func(n *tree.Node) error {
		if n.Type() != tree.TypeDir || n.LinkTo != nil {
			return nil
		}
		nid := nids[n]
		ents := make([]Dirent, 0, len(n.Children))
		whiteouts := false
		for _, c := range n.Children {
			owner := c.Inode()
			cnid, ok := nids[owner]
			if !ok {
				return fmt.Errorf("%s: hardlink to a node outside the tree", c.Path())
			}
			t := owner.Type()
			if isWhiteout(owner) {
				// A source whiteout is stored as an escaped xattr whiteout: a
				// regular file the overlay shows with trusted.overlay.whiteout.
				t = tree.TypeReg
				whiteouts = true
			}
			ents = append(ents, Dirent{Name: c.Name, Nid: cnid, Type: t})
		}
		slices.SortFunc(ents, func(a, b Dirent) int { return strings.Compare(a.Name, b.Name) })
		s.dirs[nid] = ents
		if whiteouts {
			in := s.inodes[nid]
			for _, name := range []string{"trusted.overlay.opaque", "user.overlay.opaque"} {
				in.Xattrs = setXattr(in.Xattrs, name, []byte("x"))
			}
			for _, name := range []string{"trusted.overlay.whiteouts", "user.overlay.whiteouts"} {
				in.Xattrs = setXattr(in.Xattrs, name, []byte{})
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	// Directory link counts as the kernel sees them: 2 + subdirectories.
	for nid, ents := range s.dirs {
		n := uint32(2)
		for _, e := range ents {
			if e.Type == tree.TypeDir {
				n++
			}
		}
		s.inodes[nid].Nlink = n
	}
	return s, nil
}

func isWhiteout(n *tree.Node) bool { return n.Type() == tree.TypeChar && n.Rdev == 0 }

func treeInode(n *tree.Node, nid uint64) *Inode {
	in := &Inode{
		Nid: nid, Mode: n.Mode, UID: n.UID, GID: n.GID, Nlink: n.Nlink,
		Size: n.Size, Mtime: n.Mtime, Rdev: n.Rdev, Target: n.Target,
		Payload: n.Payload, Digest: n.Digest, HasInline: n.Content != nil,
		Xattrs: slices.Clone(n.Xattrs),
	}
	if in.Nlink == 0 {
		in.Nlink = 1
	}
	if isWhiteout(n) {
		in.Mode = tree.TypeReg | n.Mode&0o7777
		in.Rdev = 0
		in.Size = 0
		in.Xattrs = setXattr(in.Xattrs, "trusted.overlay.whiteout", []byte{})
		in.Xattrs = setXattr(in.Xattrs, "user.overlay.whiteout", []byte{})
	}
	return in
}

func setXattr(xs []tree.Xattr, name string, value []byte) []tree.Xattr {
	i, ok := slices.BinarySearchFunc(xs, name, func(x tree.Xattr, s string) int { return strings.Compare(x.Name, s) })
	if ok {
		xs[i].Value = value
		return xs
	}
	return slices.Insert(xs, i, tree.Xattr{Name: name, Value: value})
}

// RootNid implements Source.
func (s *TreeSource) RootNid() uint64 { return 0 }

// Inode implements Source.
func (s *TreeSource) Inode(nid uint64) (*Inode, error) {
	if nid >= uint64(len(s.inodes)) {
		return nil, fmt.Errorf("tree source: no inode %d", nid)
	}
	return s.inodes[nid], nil
}

// Attr implements Source.
func (s *TreeSource) Attr(nid uint64) (Attr, error) {
	in, err := s.Inode(nid)
	if err != nil {
		return Attr{}, err
	}
	return in.Attr(), nil
}

// ReadDir implements Source.
func (s *TreeSource) ReadDir(nid uint64) ([]Dirent, error) {
	ents, ok := s.dirs[nid]
	if !ok {
		return nil, fmt.Errorf("tree source: inode %d is not a directory", nid)
	}
	return ents, nil
}

// ReadAt implements Source.
func (s *TreeSource) ReadAt(nid uint64, p []byte, off int64) (int, error) {
	b, ok := s.inline[nid]
	if !ok {
		return 0, fmt.Errorf("tree source: inode %d has no inline content", nid)
	}
	if off >= int64(len(b)) {
		return 0, nil
	}
	return copy(p, b[off:]), nil
}
