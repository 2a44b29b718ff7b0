// Package tree is the one data model of mossfs: a tree of file-system entries.
//
// Importers (directory, .stone, composefs dump, OCI) produce a tree, the erofs
// writer turns it into an image, the erofs reader gives it back, and the FUSE
// driver and exporters serve it. Nothing in this package does I/O.
//
// A Node is one directory entry together with the inode it names. A hardlink is
// a Node whose LinkTo points at the Node that owns the inode (the first name in
// the source, as in a composefs dump); its own metadata fields are unused. This
// mirrors libcomposefs, so that images are byte-identical to mkcomposefs's.
package tree

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strings"
)

// File type bits of Mode (the st_mode S_IFMT values).
const (
	TypeMask  = 0o170000
	TypeSock  = 0o140000
	TypeLink  = 0o120000
	TypeReg   = 0o100000
	TypeBlock = 0o060000
	TypeDir   = 0o040000
	TypeChar  = 0o020000
	TypeFifo  = 0o010000
)

// Timespec is a modification time: seconds since the epoch and nanoseconds.
// Nsec is not checked against 10^9, as in composefs dumps.
type Timespec struct {
	Sec  int64
	Nsec uint32
}

// Xattr is one extended attribute. Name is the full name ("user.foo").
type Xattr struct {
	Name  string
	Value []byte
}

// Node is a directory entry and the inode it names.
type Node struct {
	// Name is the entry's name in its parent ("" for the root).
	Name   string
	Parent *Node
	// Children of a directory. Importers may append in any order; call
	// SortChildren (or Sort on the root) before relying on byte order.
	Children []*Node

	// LinkTo is set on a hardlink: this name refers to LinkTo's inode.
	// LinkTo is never itself a hardlink and never a directory.
	LinkTo *Node

	Mode  uint32 // st_mode with the file type bits
	UID   uint32
	GID   uint32
	Nlink uint32 // as given by the source; directories are recomputed by writers
	Mtime Timespec
	Size  uint64
	Rdev  uint32 // device number for char and block devices (kernel encoding)

	// Target is a symlink's target.
	Target string
	// Content is the inline content of a small regular file (nil: not inline).
	Content []byte
	// Payload is the path of an external regular file's backing object,
	// relative to the object store ("ab/cdef…"); "" when there is none.
	Payload string
	// Digest is the fs-verity SHA-256 digest of the content (nil: unknown).
	Digest []byte

	// Xattrs sorted by Name, at most one per name (see SetXattr).
	Xattrs []Xattr
}

// Type returns the file type bits of the node's inode (following a hardlink).
func (n *Node) Type() uint32 { return n.Inode().Mode & TypeMask }

// IsDir reports whether the node is a directory.
func (n *Node) IsDir() bool { return n.Type() == TypeDir }

// Inode returns the node that owns the inode: LinkTo for a hardlink, else n.
func (n *Node) Inode() *Node {
	if n.LinkTo != nil {
		return n.LinkTo
	}
	return n
}

// Path returns the absolute path of the node ("/" for the root).
func (n *Node) Path() string {
	if n.Parent == nil {
		return "/"
	}
	var parts []string
	for p := n; p.Parent != nil; p = p.Parent {
		parts = append(parts, p.Name)
	}
	slices.Reverse(parts)
	return "/" + strings.Join(parts, "/")
}

// Xattr returns the value of the named xattr and whether it exists.
func (n *Node) Xattr(name string) ([]byte, bool) {
	i, ok := slices.BinarySearchFunc(n.Xattrs, name, func(x Xattr, s string) int { return strings.Compare(x.Name, s) })
	if !ok {
		return nil, false
	}
	return n.Xattrs[i].Value, true
}

// SetXattr sets an xattr, replacing any earlier value for the same name.
func (n *Node) SetXattr(name string, value []byte) {
	i, ok := slices.BinarySearchFunc(n.Xattrs, name, func(x Xattr, s string) int { return strings.Compare(x.Name, s) })
	if ok {
		n.Xattrs[i].Value = value
		return
	}
	n.Xattrs = slices.Insert(n.Xattrs, i, Xattr{Name: name, Value: value})
}

// RemoveXattr deletes the named xattr if present.
func (n *Node) RemoveXattr(name string) {
	i, ok := slices.BinarySearchFunc(n.Xattrs, name, func(x Xattr, s string) int { return strings.Compare(x.Name, s) })
	if ok {
		n.Xattrs = slices.Delete(n.Xattrs, i, i+1)
	}
}

// SortChildren sorts the children of n by name in byte order (strcmp).
func (n *Node) SortChildren() {
	slices.SortFunc(n.Children, func(a, b *Node) int { return strings.Compare(a.Name, b.Name) })
}

// Sort sorts the children of every directory below and including n.
func (n *Node) Sort() {
	_ = n.Walk(func(c *Node) error {
		if len(c.Children) > 1 {
			c.SortChildren()
		}
		return nil
	})
}

// Child returns the child with the given name. Children must be sorted.
func (n *Node) Child(name string) *Node {
	i, ok := slices.BinarySearchFunc(n.Children, name, func(c *Node, s string) int { return strings.Compare(c.Name, s) })
	if !ok {
		return nil
	}
	return n.Children[i]
}

// AddChild appends c to n's children and sets its parent. It does not sort.
func (n *Node) AddChild(c *Node) {
	c.Parent = n
	n.Children = append(n.Children, c)
}

// ErrSkipDir may be returned by a Walk function to skip a directory's children.
var ErrSkipDir = errors.New("skip this directory")

// Walk calls fn for n and every node below it in depth-first pre-order,
// children in slice order. Hardlinks are visited as their own nodes.
func (n *Node) Walk(fn func(*Node) error) error {
	if err := fn(n); err != nil {
		if err == ErrSkipDir {
			return nil
		}
		return err
	}
	for _, c := range n.Children {
		if err := c.Walk(fn); err != nil {
			return err
		}
	}
	return nil
}

// FileMode converts the node's st_mode to an io/fs FileMode.
func (n *Node) FileMode() fs.FileMode { return ModeToFileMode(n.Inode().Mode) }

// ModeToFileMode converts a st_mode to an io/fs FileMode.
func ModeToFileMode(m uint32) fs.FileMode {
	mode := fs.FileMode(m & 0o777)
	switch m & TypeMask {
	case TypeDir:
		mode |= fs.ModeDir
	case TypeLink:
		mode |= fs.ModeSymlink
	case TypeChar:
		mode |= fs.ModeDevice | fs.ModeCharDevice
	case TypeBlock:
		mode |= fs.ModeDevice
	case TypeFifo:
		mode |= fs.ModeNamedPipe
	case TypeSock:
		mode |= fs.ModeSocket
	}
	if m&0o4000 != 0 {
		mode |= fs.ModeSetuid
	}
	if m&0o2000 != 0 {
		mode |= fs.ModeSetgid
	}
	if m&0o1000 != 0 {
		mode |= fs.ModeSticky
	}
	return mode
}

// NewDir returns a directory node with the given permission bits.
func NewDir(name string, perm uint32) *Node {
	return &Node{Name: name, Mode: TypeDir | perm&0o7777, Nlink: 2}
}

// Lookup finds the node at an absolute or relative slash-separated path,
// skipping empty components. Children must be sorted. "." and ".." are not
// resolved: they are names that never exist.
func (n *Node) Lookup(path string) *Node {
	cur := n
	for comp := range strings.SplitSeq(path, "/") {
		if comp == "" {
			continue
		}
		if !cur.IsDir() {
			return nil
		}
		cur = cur.Inode().Child(comp)
		if cur == nil {
			return nil
		}
	}
	return cur
}

// Equal reports the first difference between two trees' metadata and
// content, as an error naming the path, or nil when they are equal.
// Hardlinks compare by the path of their target. Directory sizes and nlink
// are not compared (writers recompute them).
func Equal(a, b *Node) error {
	if err := equalNode(a, b); err != nil {
		return err
	}
	if len(a.Children) != len(b.Children) {
		return fmt.Errorf("%s: %d children vs %d", a.Path(), len(a.Children), len(b.Children))
	}
	for i := range a.Children {
		if err := Equal(a.Children[i], b.Children[i]); err != nil {
			return err
		}
	}
	return nil
}

func equalNode(a, b *Node) error {
	p := a.Path()
	if a.Name != b.Name {
		return fmt.Errorf("%s: name %q vs %q", p, a.Name, b.Name)
	}
	if (a.LinkTo == nil) != (b.LinkTo == nil) {
		return fmt.Errorf("%s: hardlink vs not", p)
	}
	if a.LinkTo != nil {
		if a.LinkTo.Path() != b.LinkTo.Path() {
			return fmt.Errorf("%s: hardlink to %s vs %s", p, a.LinkTo.Path(), b.LinkTo.Path())
		}
		return nil
	}
	switch {
	case a.Mode != b.Mode:
		return fmt.Errorf("%s: mode %o vs %o", p, a.Mode, b.Mode)
	case a.UID != b.UID || a.GID != b.GID:
		return fmt.Errorf("%s: owner %d:%d vs %d:%d", p, a.UID, a.GID, b.UID, b.GID)
	case a.Mtime != b.Mtime:
		return fmt.Errorf("%s: mtime %v vs %v", p, a.Mtime, b.Mtime)
	case a.Type() != TypeDir && a.Size != b.Size:
		return fmt.Errorf("%s: size %d vs %d", p, a.Size, b.Size)
	case a.Rdev != b.Rdev:
		return fmt.Errorf("%s: rdev %d vs %d", p, a.Rdev, b.Rdev)
	case a.Target != b.Target:
		return fmt.Errorf("%s: symlink target %q vs %q", p, a.Target, b.Target)
	case !bytes.Equal(a.Content, b.Content):
		return fmt.Errorf("%s: inline content differs", p)
	case a.Payload != b.Payload:
		return fmt.Errorf("%s: payload %q vs %q", p, a.Payload, b.Payload)
	case !bytes.Equal(a.Digest, b.Digest):
		return fmt.Errorf("%s: digest %x vs %x", p, a.Digest, b.Digest)
	case len(a.Xattrs) != len(b.Xattrs):
		return fmt.Errorf("%s: %d xattrs vs %d", p, len(a.Xattrs), len(b.Xattrs))
	}
	for i := range a.Xattrs {
		if a.Xattrs[i].Name != b.Xattrs[i].Name || !bytes.Equal(a.Xattrs[i].Value, b.Xattrs[i].Value) {
			return fmt.Errorf("%s: xattr %q=%q vs %q=%q", p, a.Xattrs[i].Name, a.Xattrs[i].Value, b.Xattrs[i].Name, b.Xattrs[i].Value)
		}
	}
	return nil
}
