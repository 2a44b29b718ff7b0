package state

import (
	"bytes"
	"fmt"
	"slices"
	"strings"

	"github.com/mossfs/mossfs/tree"
)

// StateIDName is the file at the image root holding the transaction id.
const StateIDName = ".stateID"

// Fragment is one input together with its tree: the root of the tree is the
// image root (the input is already placed at its prefix).
type Fragment struct {
	Input Input
	Root  *tree.Node
}

// Conflict is one path that two inputs provide differently, or a package
// conflict declared in a stone's metadata (Path empty).
type Conflict struct {
	Path   string `json:"path,omitempty"`
	A      string `json:"a"`
	B      string `json:"b"`
	Reason string `json:"reason"`
}

func (c Conflict) String() string {
	if c.Path == "" {
		return fmt.Sprintf("%s conflicts with %s: %s", c.A, c.B, c.Reason)
	}
	return fmt.Sprintf("%s: %s and %s differ (%s)", c.Path, c.A, c.B, c.Reason)
}

// ConflictError lists the conflicts that stopped a compose.
type ConflictError struct {
	Conflicts []Conflict
	// More counts conflicts found beyond those listed.
	More int
}

const maxConflicts = 100

func (e *ConflictError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d conflict(s)", len(e.Conflicts)+e.More)
	for _, c := range e.Conflicts {
		b.WriteString("\n  ")
		b.WriteString(c.String())
	}
	if e.More > 0 {
		fmt.Fprintf(&b, "\n  … and %d more", e.More)
	}
	return b.String()
}

// PackageConflicts checks the Conflicts records of the stone inputs against
// what the other stone inputs provide.
func PackageConflicts(inputs []Input) []Conflict {
	providers := map[string][]int{}
	for i, in := range inputs {
		if in.Kind != KindStone {
			continue
		}
		provides := append([]string{"name(" + in.Name + ")"}, in.Provides...)
		for _, p := range provides {
			if !slices.Contains(providers[p], i) {
				providers[p] = append(providers[p], i)
			}
		}
	}
	var out []Conflict
	for i, in := range inputs {
		for _, c := range in.Conflicts {
			if !strings.Contains(c, "(") {
				c = "name(" + c + ")"
			}
			for _, j := range providers[c] {
				if j != i && inputs[j].Name != in.Name {
					out = append(out, Conflict{A: in.Label(), B: inputs[j].Label(), Reason: "declared conflict " + c})
				}
			}
		}
	}
	return out
}

// Merge combines fragments, in order, into one image tree. It consumes the
// fragments (their nodes move into the result). Directories merge; any other
// path provided by two inputs must be the same (type, mode, owner, content,
// target, xattrs; mtimes may differ) and is kept once, from the first input.
// A .stateID at a fragment's root is dropped: the transaction writes its own.
// All conflicts (up to a limit) are returned together as a *ConflictError.
func Merge(frags []Fragment) (*tree.Node, error) {
	return merge(frags, nil)
}

// merge is Merge; undecided, if set, tells content it cannot compare yet
// (the pre-check's stand-in digests): such content differences are no
// conflict.
func merge(frags []Fragment, undecided func(a, b *tree.Node) bool) (*tree.Node, error) {
	m := merger{owner: map[*tree.Node]int{}, remap: map[*tree.Node]*tree.Node{}, frags: frags, undecided: undecided}
	var inputs []Input
	for _, f := range frags {
		inputs = append(inputs, f.Input)
	}
	for _, c := range PackageConflicts(inputs) {
		m.conflict(c)
	}
	root := tree.NewDir("", 0o755)
	m.owner[root] = -1
	for i, f := range frags {
		if f.Root == nil {
			continue
		}
		if !f.Root.IsDir() {
			return nil, fmt.Errorf("merge: input %s: root is not a directory", f.Input.Label())
		}
		f.Root.Sort()
		if i == 0 || len(root.Children) == 0 {
			// The first fragment becomes the result's base as it is.
			m.adoptDirMeta(root, f.Root, true)
			for _, c := range f.Root.Children {
				if c.Name == StateIDName {
					continue
				}
				root.AddChild(c)
				m.owner[c] = i
			}
			continue
		}
		m.mergeDir(root, f.Root, i)
	}
	if len(m.conflicts) > 0 {
		return nil, &ConflictError{Conflicts: m.conflicts, More: m.more}
	}
	if len(m.remap) > 0 {
		_ = root.Walk(func(n *tree.Node) error {
			if n.LinkTo != nil {
				if to, ok := m.remap[n.LinkTo]; ok {
					n.LinkTo = to.Inode()
				}
			}
			return nil
		})
	}
	return root, nil
}

type merger struct {
	frags     []Fragment
	owner     map[*tree.Node]int // grafted subtree roots → input index
	remap     map[*tree.Node]*tree.Node
	conflicts []Conflict
	more      int
	undecided func(a, b *tree.Node) bool
}

func (m *merger) conflict(c Conflict) {
	if len(m.conflicts) < maxConflicts {
		m.conflicts = append(m.conflicts, c)
	} else {
		m.more++
	}
}

func (m *merger) label(i int) string {
	if i < 0 || i >= len(m.frags) {
		return "(implicit directory)"
	}
	return m.frags[i].Input.Label()
}

// ownerOf returns the input index that provided n (nearest grafted ancestor).
func (m *merger) ownerOf(n *tree.Node) int {
	for p := n; p != nil; p = p.Parent {
		if i, ok := m.owner[p]; ok {
			return i
		}
	}
	return -1
}

func isDefaultDir(n *tree.Node) bool {
	return n.Mode == tree.TypeDir|0o755 && n.UID == 0 && n.GID == 0 && len(n.Xattrs) == 0 && n.Mtime == (tree.Timespec{})
}

// adoptDirMeta takes src's directory metadata into dst if dst still has the
// implicit default (or force).
func (m *merger) adoptDirMeta(dst, src *tree.Node, force bool) {
	if !force && (!isDefaultDir(dst) || isDefaultDir(src)) {
		return
	}
	dst.Mode, dst.UID, dst.GID, dst.Mtime = src.Mode, src.UID, src.GID, src.Mtime
	dst.Xattrs = slices.Clone(src.Xattrs)
}

// mergeDir merges the (sorted) children of src, from input i, into dst
// (sorted). The result stays sorted.
func (m *merger) mergeDir(dst, src *tree.Node, i int) {
	m.adoptDirMeta(dst, src, false)
	old := dst.Children
	merged := make([]*tree.Node, 0, len(old)+len(src.Children))
	a, b := 0, 0
	for a < len(old) || b < len(src.Children) {
		var cmp int
		switch {
		case a == len(old):
			cmp = 1
		case b == len(src.Children):
			cmp = -1
		default:
			cmp = strings.Compare(old[a].Name, src.Children[b].Name)
		}
		switch {
		case cmp < 0:
			merged = append(merged, old[a])
			a++
		case cmp > 0:
			c := src.Children[b]
			b++
			if dst.Parent == nil && c.Name == StateIDName {
				continue
			}
			c.Parent = dst
			m.owner[c] = i
			merged = append(merged, c)
		default:
			e, c := old[a], src.Children[b]
			a++
			b++
			merged = append(merged, e)
			m.mergeEntry(e, c, i)
		}
	}
	dst.Children = merged
}

func (m *merger) mergeEntry(e, c *tree.Node, i int) {
	eDir, cDir := e.LinkTo == nil && e.IsDir(), c.LinkTo == nil && c.IsDir()
	switch {
	case eDir && cDir:
		m.mergeDir(e, c, i)
	case eDir != cDir:
		m.conflict(Conflict{Path: e.Path(), A: m.label(m.ownerOf(e)), B: m.label(i), Reason: "directory vs " + typeName(c.Inode().Mode)})
	default:
		if why := entryDiff(e.Inode(), c.Inode()); why != "" {
			if why == "content" && m.undecided != nil && m.undecided(e.Inode(), c.Inode()) {
				return
			}
			m.conflict(Conflict{Path: e.Path(), A: m.label(m.ownerOf(e)), B: m.label(i), Reason: why})
			return
		}
		// Same content: keep the existing entry; hardlinks to the dropped
		// inode are redirected to the kept one.
		m.remap[c.Inode()] = e.Inode()
	}
}

func typeName(mode uint32) string {
	switch mode & tree.TypeMask {
	case tree.TypeDir:
		return "directory"
	case tree.TypeReg:
		return "regular file"
	case tree.TypeLink:
		return "symlink"
	case tree.TypeChar:
		return "character device"
	case tree.TypeBlock:
		return "block device"
	case tree.TypeFifo:
		return "fifo"
	case tree.TypeSock:
		return "socket"
	}
	return fmt.Sprintf("mode %o", mode)
}

// entryDiff says how two non-directory inodes differ in what the image
// would show ("" when the same). Mtime and nlink are not compared: two
// packages shipping the same file are not in conflict.
func entryDiff(a, b *tree.Node) string {
	switch {
	case a.Mode&tree.TypeMask != b.Mode&tree.TypeMask:
		return typeName(a.Mode) + " vs " + typeName(b.Mode)
	case a.Mode != b.Mode:
		return fmt.Sprintf("mode %o vs %o", a.Mode&0o7777, b.Mode&0o7777)
	case a.UID != b.UID || a.GID != b.GID:
		return fmt.Sprintf("owner %d:%d vs %d:%d", a.UID, a.GID, b.UID, b.GID)
	case a.Target != b.Target:
		return fmt.Sprintf("symlink target %q vs %q", a.Target, b.Target)
	case a.Rdev != b.Rdev:
		return "device number"
	case a.Mode&tree.TypeMask == tree.TypeReg && !sameContent(a, b):
		return "content"
	case !sameXattrs(a.Xattrs, b.Xattrs):
		return "xattrs"
	}
	return ""
}

func sameContent(a, b *tree.Node) bool {
	if a.Size != b.Size {
		return false
	}
	if len(a.Digest) > 0 && len(b.Digest) > 0 {
		return bytes.Equal(a.Digest, b.Digest)
	}
	if a.Payload != "" || b.Payload != "" {
		return a.Payload == b.Payload
	}
	return bytes.Equal(a.Content, b.Content)
}

func sameXattrs(a, b []tree.Xattr) bool {
	return slices.EqualFunc(a, b, func(x, y tree.Xattr) bool { return x.Name == y.Name && bytes.Equal(x.Value, y.Value) })
}

// CountTree counts a tree's entries by type, its distinct external objects
// and its regular-file bytes (each inode once).
func CountTree(root *tree.Node) Counts {
	var c Counts
	// Sized for every external file up front: growing the set rehashed
	// it a dozen times on a 65k-entry tree.
	files := 0
	_ = root.Walk(func(n *tree.Node) error {
		if n.LinkTo == nil && n.Payload != "" {
			files++
		}
		return nil
	})
	objs := make(map[string]struct{}, files)
	_ = root.Walk(func(n *tree.Node) error {
		c.Entries++
		if n.LinkTo != nil {
			return nil
		}
		switch n.Mode & tree.TypeMask {
		case tree.TypeDir:
			c.Dirs++
		case tree.TypeReg:
			c.Files++
			c.Bytes += n.Size
			if n.Payload != "" {
				objs[n.Payload] = struct{}{}
			}
		case tree.TypeLink:
			c.Symlinks++
		default:
			c.Other++
		}
		return nil
	})
	c.Objects = len(objs)
	return c
}
