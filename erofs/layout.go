package erofs

import (
	"bytes"
	"errors"
	"fmt"
	"hash/maphash"
	"math/bits"
	"runtime"
	"slices"
	"strings"

	"github.com/mossfs/mossfs/tree"
)

// This file computes where everything of an image goes, as a pure function
// of the source tree and the options (computeLayout); writer.go turns the
// result into bytes. The rules are those of mkcomposefs 1.0.8; section
// numbers refer to shared/reference/composefs-format.md.
//
// The layout refers to the tree instead of copying from it (names, xattr
// values, contents, targets), and the xattrs the writer adds are recipes
// (valueKind) rather than byte slices, so that the memory it needs stays a
// fraction of the image's size.

// WriteOptions controls the image writer.
type WriteOptions struct {
	// MinVersion and MaxVersion bound the composefs format version (0 or 1).
	// The writer uses MinVersion, or 1 if the tree has a user whiteout (a
	// character device 0:0) and MaxVersion allows it (§3).
	MinVersion, MaxVersion int
}

// DefaultWriteOptions returns the mkcomposefs defaults: versions 0 to 1.
func DefaultWriteOptions() WriteOptions { return WriteOptions{MinVersion: 0, MaxVersion: 1} }

// ErrFileTooBig is wrapped by errors for external files whose chunk table
// would not fit (SIZE > 2^53), as mkcomposefs's EFBIG.
var ErrFileTooBig = errors.New("file too big")

// Inode flags.
const (
	inodeCompact      = 1 << iota // 32-byte record
	inodeHasWhiteout              // directory holding a user whiteout
	inodeChunkBlock               // chunk table moved to a data block of 0xFF
	inodeSymlinkBlock             // symlink target in a data block
	inodeWhiteout                 // user whiteout, stored as a regular file
	inodeExternal                 // regular file with a chunk table
)

// inode is the layout of one inode record. Indexes into layout.inodes are
// the inode numbers (i_ino), in breadth-first order.
type inode struct {
	src *tree.Node // nil for the root's whiteout stubs
	pos uint64     // byte offset of the record (nid = pos / 32)
	// Stored xattrs: layout.xattrs[xattrStart : xattrStart+nXattrs], by name.
	xattrStart int32
	nXattrs    int32
	// Directory entries: layout.dirents[direntStart : direntStart+nDirents].
	direntStart int32
	nDirents    int32
	nBlocks     uint32 // data blocks
	blkaddr     uint32 // first data block (when nBlocks > 0)
	u           uint32 // i_u
	nlink       uint32
	xattrSize   uint32 // bytes of the xattr area (0: none)
	tail        uint16 // bytes inline after the xattrs (≤ 4096)
	mode        uint16 // i_mode as stored (whiteouts become regular files)
	nShared     uint8  // shared xattrs referenced (≤ 128)
	flags       uint8
	ftype       uint8 // dirent file type
}

func (in *inode) recordSize() uint64 {
	if in.flags&inodeCompact != 0 {
		return InodeCompactSize
	}
	return InodeExtendedSize
}

func (in *inode) typ() uint32 { return uint32(in.mode) & tree.TypeMask }

// Where a stored xattr's value comes from.
const (
	valueSource      = iota // src.Xattrs[xattr.src].Value
	valueEmpty              // ""
	valueMetacopy           // the overlay metacopy of src.Digest (or "")
	valueRedirect           // "/" + src.Payload
	valueOpaqueX            // "x"
	valueOpaqueY            // "y"
	valueRootSelinux        // the root's security.selinux
)

// xattr is a stored xattr of an inode.
type xattr struct {
	name   uint16 // index into layout.names
	kind   uint8  // valueSource, …
	rep    bool   // the first of equal xattrs used more than once
	vlen   uint16 // value length
	src    uint32 // for valueSource: index into the inode's src.Xattrs
	shared int32  // byte offset in the shared table, or -1 when inline; see shareTable
}

// xattrName is an xattr name as stored (escaped), with its encoding.
type xattrName struct {
	name   string
	suffix string
	index  uint8
	bit    uint8 // bloom filter bit
}

// dirent is one directory entry (including "." and "..").
type dirent struct {
	node    *tree.Node // the entry's node (a hardlink's own node); nil for special
	inode   int32      // index into layout.inodes
	special uint16     // 0: node.Name; direntDot, direntDotDot, direntStub+k: stubNames[k]
}

const (
	direntDot    = 1
	direntDotDot = 2
	direntStub   = 3
)

func (d *dirent) name() string {
	switch {
	case d.special == 0:
		return d.node.Name
	case d.special == direntDot:
		return "."
	case d.special == direntDotDot:
		return ".."
	}
	return stubNames[d.special-direntStub]
}

// layout is everything computeLayout decides about an image.
type layout struct {
	version     int
	hasACL      bool
	buildTime   tree.Timespec
	root        *tree.Node
	rootSelinux []byte
	inodes      []inode
	xattrs      []xattr
	dirents     []dirent
	names       []xattrName
	shared      []int32 // indexes into xattrs of the shared table's entries, in table order
	owner       []int32 // for each shared entry, the inode holding that xattr

	inodesEnd  uint64 // end of the inode area, 32-aligned; the shared table starts here
	sharedSize uint64
	dataStart  uint64 // first data block (byte offset)
	nBlocks    uint64 // data blocks
	size       uint64 // image size
}

// stubNames are the names of the 256 whiteout stubs of the root (§10).
var stubNames = func() [256]string {
	var s [256]string
	const hex = "0123456789abcdef"
	for i := range s {
		s[i] = string([]byte{hex[i>>4], hex[i&15]})
	}
	return s
}()

// computeLayout decides the whole image: inode order and numbers, stored
// xattrs, shared xattr table, record sizes, positions and data blocks.
// It does not modify root.
func computeLayout(root *tree.Node, opts WriteOptions) (*layout, error) {
	if opts.MinVersion < 0 || opts.MinVersion > MaxComposefsVersion || opts.MaxVersion < 0 || opts.MaxVersion > MaxComposefsVersion {
		return nil, fmt.Errorf("composefs version range %d..%d: versions must be 0 to %d", opts.MinVersion, opts.MaxVersion, MaxComposefsVersion)
	}
	if opts.MaxVersion < opts.MinVersion {
		return nil, fmt.Errorf("composefs version range %d..%d: max below min", opts.MinVersion, opts.MaxVersion)
	}
	if root == nil || root.LinkTo != nil || root.Mode&tree.TypeMask != tree.TypeDir {
		return nil, errors.New("root must be a directory")
	}
	l := &layout{root: root}
	b := &layoutBuilder{l: l, nameIDs: make(map[string]uint16)}
	b.presize(root)
	if err := b.collect(root); err != nil {
		return nil, err
	}
	l.version = opts.MinVersion
	if b.hasWhiteout && opts.MaxVersion >= 1 {
		l.version = 1
	}
	if err := b.computeXattrs(); err != nil {
		return nil, err
	}
	l.computeShared(b.share)
	if err := l.computeSizes(); err != nil {
		return nil, err
	}
	l.place()
	return l, nil
}

// layoutBuilder holds scratch state of computeLayout.
type layoutBuilder struct {
	l           *layout
	hasWhiteout bool
	links       []pendingDirent
	parents     []int32 // inode index of each inode's parent directory
	nameIDs     map[string]uint16
	scratch     []*tree.Node
	xattrCap    int
	share       *shareTable
}

type pendingDirent struct {
	dirent int32
	target *tree.Node
	path   *tree.Node
}

func isUserWhiteout(n *tree.Node) bool {
	return n.Mode&tree.TypeMask == tree.TypeChar && n.Rdev == 0
}

// presize counts what the layout will hold, so that its arrays are
// allocated once. It descends only into children whose Parent is the
// directory holding them (collect rejects the others), so a malformed tree
// with a cycle cannot make it recurse forever.
func (b *layoutBuilder) presize(root *tree.Node) {
	inodes, dirents, xattrs := 1+256, 256, 256
	var count func(n *tree.Node)
	count = func(n *tree.Node) {
		dirents += 2 + len(n.Children)
		xattrs += len(n.Xattrs) + 4
		for _, c := range n.Children {
			if c.LinkTo != nil {
				continue
			}
			inodes++
			xattrs += len(c.Xattrs) + 2
			if c.Mode&tree.TypeMask == tree.TypeDir && c.Parent == n {
				xattrs -= len(c.Xattrs) + 2
				count(c)
			}
		}
	}
	count(root)
	b.l.inodes = make([]inode, 0, inodes)
	b.parents = make([]int32, 0, inodes)
	b.l.dirents = make([]dirent, 0, dirents)
	b.xattrCap = xattrs
}

// collect numbers the inodes breadth-first and builds every directory's
// sorted entries (§5), with ".", ".." and, in the root, the whiteout stubs.
func (b *layoutBuilder) collect(root *tree.Node) error {
	l := b.l
	if err := checkNode(root); err != nil {
		return err
	}
	l.inodes = append(l.inodes, inode{src: root, mode: uint16(root.Mode), ftype: FileTypeDir, nlink: 2})
	b.parents = append(b.parents, 0) // the root's ".." is the root
	l.buildTime = root.Mtime
	for i := 0; i < len(l.inodes); i++ {
		n := l.inodes[i].src
		if n == nil || n.Mode&tree.TypeMask != tree.TypeDir {
			continue
		}
		kids, err := b.sortedChildren(n)
		if err != nil {
			return err
		}
		self := int32(i)
		start := int32(len(l.dirents))
		// Merge ".", "..", the stubs (root only) and the children in strcmp order.
		var stubs []uint16
		if i == 0 {
			stubs = missingStubs(kids)
		}
		dots := 0 // how many of ".", ".." are out
		emitDots := func(before string) {
			for dots < 2 && (before == "" || [2]string{".", ".."}[dots] < before) {
				if dots == 0 {
					l.dirents = append(l.dirents, dirent{inode: self, special: direntDot})
				} else {
					l.dirents = append(l.dirents, dirent{inode: b.parents[i], special: direntDotDot})
				}
				dots++
			}
		}
		si := 0
		emitStubs := func(before string) {
			for si < len(stubs) && (before == "" || stubNames[stubs[si]] < before) {
				emitDots(stubNames[stubs[si]])
				l.inodes = append(l.inodes, inode{mode: tree.TypeChar | 0o644, nlink: 1, ftype: FileTypeChr})
				b.parents = append(b.parents, self)
				l.dirents = append(l.dirents, dirent{inode: int32(len(l.inodes) - 1), special: direntStub + stubs[si]})
				si++
			}
		}
		nlink := uint32(2)
		for _, c := range kids {
			emitStubs(c.Name)
			emitDots(c.Name)
			if c.LinkTo != nil {
				b.links = append(b.links, pendingDirent{dirent: int32(len(l.dirents)), target: c.LinkTo, path: c})
				l.dirents = append(l.dirents, dirent{node: c, inode: -1})
				continue
			}
			if err := checkNode(c); err != nil {
				return err
			}
			in := inode{src: c, mode: uint16(c.Mode), nlink: c.Nlink}
			switch c.Mode & tree.TypeMask {
			case tree.TypeDir:
				in.ftype = FileTypeDir
				in.nlink = 2
				nlink++
			case tree.TypeReg:
				in.ftype = FileTypeReg
				if c.Size > 0 && c.Content == nil {
					in.flags |= inodeExternal
				}
			case tree.TypeLink:
				in.ftype = FileTypeSymlink
			case tree.TypeChar:
				in.ftype = FileTypeChr
				in.u = c.Rdev
				if c.Rdev == 0 {
					// User whiteout: stored as an escaped whiteout file (§9).
					b.hasWhiteout = true
					l.inodes[i].flags |= inodeHasWhiteout
					in.flags |= inodeWhiteout
					in.ftype = FileTypeReg
					in.mode = uint16(tree.TypeReg | c.Mode&^tree.TypeMask)
				}
			case tree.TypeBlock:
				in.ftype = FileTypeBlk
				in.u = c.Rdev
			case tree.TypeFifo:
				in.ftype = FileTypeFifo
			case tree.TypeSock:
				in.ftype = FileTypeSock
			}
			if c.Mtime.Sec < l.buildTime.Sec || (c.Mtime.Sec == l.buildTime.Sec && c.Mtime.Nsec < l.buildTime.Nsec) {
				l.buildTime = c.Mtime
			}
			l.inodes = append(l.inodes, in)
			b.parents = append(b.parents, self)
			l.dirents = append(l.dirents, dirent{node: c, inode: int32(len(l.inodes) - 1)})
		}
		emitStubs("")
		emitDots("")
		in := &l.inodes[i]
		in.direntStart, in.nDirents = start, int32(len(l.dirents))-start
		in.nlink = nlink
	}
	if len(b.links) > 0 {
		return b.resolveLinks()
	}
	return nil
}

// sortedChildren returns n's children in strcmp order, checking names.
func (b *layoutBuilder) sortedChildren(n *tree.Node) ([]*tree.Node, error) {
	kids := n.Children
	sorted := true
	for i := 1; i < len(kids); i++ {
		if kids[i-1].Name >= kids[i].Name {
			sorted = false
			break
		}
	}
	if !sorted {
		b.scratch = append(b.scratch[:0], kids...)
		slices.SortFunc(b.scratch, func(a, c *tree.Node) int { return strings.Compare(a.Name, c.Name) })
		kids = b.scratch
	}
	for i, c := range kids {
		if err := checkName(c.Name); err != nil {
			return nil, fmt.Errorf("%s: %w", c.Path(), err)
		}
		if i > 0 && kids[i-1].Name == c.Name {
			return nil, fmt.Errorf("%s: duplicate name in directory", c.Path())
		}
		if c.Parent != n {
			return nil, fmt.Errorf("%s: node's Parent is not the directory holding it", c.Path())
		}
	}
	return kids, nil
}

func checkName(name string) error {
	switch {
	case name == "":
		return errors.New("empty file name")
	case name == "." || name == "..":
		return fmt.Errorf("file name %q not allowed", name)
	case len(name) > maxNameLen:
		return fmt.Errorf("file name of %d bytes, at most %d allowed", len(name), maxNameLen)
	case strings.IndexByte(name, '/') >= 0 || strings.IndexByte(name, 0) >= 0:
		return fmt.Errorf("file name %q contains '/' or NUL", name)
	}
	return nil
}

// missingStubs returns, in order, the numbers of the names 00…ff that are
// not children of the root.
func missingStubs(kids []*tree.Node) []uint16 {
	out := make([]uint16, 0, 256)
	k := 0
	for s := range stubNames {
		for k < len(kids) && kids[k].Name < stubNames[s] {
			k++
		}
		if k < len(kids) && kids[k].Name == stubNames[s] {
			continue
		}
		out = append(out, uint16(s))
	}
	return out
}

func (b *layoutBuilder) resolveLinks() error {
	l := b.l
	index := make(map[*tree.Node]int32, len(b.links))
	for _, p := range b.links {
		index[p.target] = -1
	}
	for i := range l.inodes {
		if s := l.inodes[i].src; s != nil {
			if _, ok := index[s]; ok {
				index[s] = int32(i)
			}
		}
	}
	for _, p := range b.links {
		t := p.target
		if t.LinkTo != nil {
			return fmt.Errorf("%s: hardlink to %s, itself a hardlink", p.path.Path(), t.Path())
		}
		if t.Mode&tree.TypeMask == tree.TypeDir {
			return fmt.Errorf("%s: hardlink to a directory (%s)", p.path.Path(), t.Path())
		}
		idx := index[t]
		if idx < 0 {
			return fmt.Errorf("%s: hardlink target %s is not in the tree", p.path.Path(), t.Path())
		}
		l.dirents[p.dirent].inode = idx
	}
	return nil
}

// checkNode rejects what the writer cannot represent.
func checkNode(n *tree.Node) error {
	switch n.Mode & tree.TypeMask {
	case tree.TypeReg:
		if n.Content != nil && uint64(len(n.Content)) != n.Size {
			return fmt.Errorf("%s: inline content of %d bytes, size %d", n.Path(), len(n.Content), n.Size)
		}
		if n.Content == nil && n.Size > maxExternalSize {
			return fmt.Errorf("%s: external file of %d bytes (more than 2^53): %w", n.Path(), n.Size, ErrFileTooBig)
		}
		if n.Digest != nil && len(n.Digest) != digestSize {
			return fmt.Errorf("%s: digest of %d bytes, want %d", n.Path(), len(n.Digest), digestSize)
		}
		if len(n.Payload)+1 > maxXattrValueLen {
			return fmt.Errorf("%s: payload of %d bytes, at most %d allowed", n.Path(), len(n.Payload), maxXattrValueLen-1)
		}
	case tree.TypeLink:
		if n.Target == "" {
			return fmt.Errorf("%s: symlink without a target", n.Path())
		}
		if len(n.Target) > maxSymlinkLen {
			return fmt.Errorf("%s: symlink target of %d bytes, at most %d allowed", n.Path(), len(n.Target), maxSymlinkLen)
		}
	case tree.TypeDir, tree.TypeChar, tree.TypeBlock, tree.TypeFifo, tree.TypeSock:
	default:
		return fmt.Errorf("%s: mode %o has no valid file type", n.Path(), n.Mode)
	}
	for _, x := range n.Xattrs {
		if x.Name == "" || len(x.Name) > maxXattrNameLen || strings.IndexByte(x.Name, 0) >= 0 {
			return fmt.Errorf("%s: invalid xattr name %q", n.Path(), x.Name)
		}
		if len(x.Value) > maxXattrValueLen {
			return fmt.Errorf("%s: xattr %s value of %d bytes, at most %d allowed", n.Path(), x.Name, len(x.Value), maxXattrValueLen)
		}
	}
	return nil
}

// nameID interns a stored xattr name.
func (b *layoutBuilder) nameID(name string) uint16 {
	if id, ok := b.nameIDs[name]; ok {
		return id
	}
	idx, suffix := SplitXattrName(name)
	id := uint16(len(b.l.names))
	b.l.names = append(b.l.names, xattrName{name: name, suffix: suffix, index: idx, bit: uint8(XattrFilterBit(idx, suffix))})
	b.nameIDs[name] = id
	return id
}

// computeXattrs builds each inode's stored xattrs (§7.2, §8–§10): the
// source ones with trusted.overlay.* escaped, then the ones the writer adds,
// a later value for a name replacing an earlier one; sorted by name.
func (b *layoutBuilder) computeXattrs() error {
	l := b.l
	// Fixed ids for the names the writer adds.
	for _, n := range []string{XattrMetacopy, XattrRedirect, XattrOpaque, XattrEscWhiteout, XattrEscWhiteouts,
		XattrEscOpaque, XattrUserWhiteout, XattrUserWhiteouts, XattrUserOpaque, XattrSelinux, XattrACLAccess, XattrACLDflt} {
		b.nameID(n)
	}
	const (
		idMetacopy = iota
		idRedirect
		idOpaque
		idEscWhiteout
		idEscWhiteouts
		idEscOpaque
		idUserWhiteout
		idUserWhiteouts
		idUserOpaque
		idSelinux
		idACLAccess
		idACLDflt
	)
	root := l.root
	for k, x := range root.Xattrs {
		if x.Name == XattrSelinux {
			l.rootSelinux = root.Xattrs[k].Value
		}
	}
	hasRootSelinux := false
	for _, x := range root.Xattrs {
		hasRootSelinux = hasRootSelinux || x.Name == XattrSelinux
	}
	l.xattrs = make([]xattr, 0, b.xattrCap)
	st := newShareTable(b.xattrCap)
	for i := range l.inodes {
		in := &l.inodes[i]
		n := in.src
		start := len(l.xattrs)
		set := func(id uint16, kind uint8) {
			for j := start; j < len(l.xattrs); j++ {
				if l.xattrs[j].name == id {
					l.xattrs[j].kind, l.xattrs[j].src = kind, 0
					return
				}
			}
			l.xattrs = append(l.xattrs, xattr{name: id, kind: kind})
		}
		if n == nil {
			if hasRootSelinux {
				l.xattrs = append(l.xattrs, xattr{name: idSelinux, kind: valueRootSelinux})
			}
		} else {
			for k, x := range n.Xattrs {
				name := x.Name
				if strings.HasPrefix(name, XattrOverlayPrefix) {
					name = XattrOverlayEscPrefix + name[len(XattrOverlayPrefix):]
				}
				l.xattrs = append(l.xattrs, xattr{name: b.nameID(name), kind: valueSource, src: uint32(k)})
			}
			// Source names may repeat (a tree not built with SetXattr):
			// the last value wins, as in a dump line.
			xs := l.xattrs[start:]
			sortXattrs(l.names, xs)
			xs = dedupXattrs(xs)
			l.xattrs = l.xattrs[:start+len(xs)]
			switch {
			case in.flags&inodeExternal != 0:
				set(idMetacopy, valueMetacopy)
				if n.Payload != "" {
					set(idRedirect, valueRedirect)
				}
			case in.flags&inodeWhiteout != 0:
				set(idEscWhiteout, valueEmpty)
				set(idUserWhiteout, valueEmpty)
			case in.flags&inodeHasWhiteout != 0:
				set(idEscWhiteouts, valueEmpty)
				set(idUserWhiteouts, valueEmpty)
				if l.version >= 1 {
					set(idEscOpaque, valueOpaqueX)
					set(idUserOpaque, valueOpaqueX)
				}
			}
			if i == 0 {
				set(idOpaque, valueOpaqueY)
			}
		}
		xs := l.xattrs[start:]
		sortXattrs(l.names, xs)
		in.xattrStart, in.nXattrs = int32(start), int32(len(xs))
		for j := range xs {
			x := &xs[j]
			if x.name == idACLAccess || x.name == idACLDflt {
				l.hasACL = true
			}
			x.vlen = uint16(l.valueLen(in, x))
		}
	}
	// Hashing reads every value (scattered over the tree's memory): large
	// trees are hashed by several goroutines, then inserted in order.
	hashes := make([]uint64, len(l.xattrs))
	workers := min(runtime.GOMAXPROCS(0), len(l.inodes)/parallelWriteInodes+1)
	per := (len(l.inodes) + workers - 1) / workers
	inParallel(len(l.inodes), per, func(lo, hi int) {
		var buf []byte
		for i := lo; i < hi; i++ {
			in := &l.inodes[i]
			for j := in.xattrStart; j < in.xattrStart+in.nXattrs; j++ {
				hashes[j], buf = st.hash(l, in, &l.xattrs[j], buf)
			}
		}
	})
	for i := range l.inodes {
		in := &l.inodes[i]
		for j := in.xattrStart; j < in.xattrStart+in.nXattrs; j++ {
			st.insert(l, int32(i), j, hashes[j])
		}
	}
	b.share = st
	return nil
}

// sortXattrs sorts by name, stably (usually few per inode: insertion sort).
func sortXattrs(names []xattrName, xs []xattr) {
	if len(xs) > 16 {
		slices.SortStableFunc(xs, func(a, b xattr) int { return strings.Compare(names[a.name].name, names[b.name].name) })
		return
	}
	for i := 1; i < len(xs); i++ {
		for j := i; j > 0 && names[xs[j-1].name].name > names[xs[j].name].name; j-- {
			xs[j-1], xs[j] = xs[j], xs[j-1]
		}
	}
}

// dedupXattrs keeps the last of each run of equal names.
func dedupXattrs(xs []xattr) []xattr {
	out := xs[:0]
	for j := range xs {
		if j+1 < len(xs) && xs[j+1].name == xs[j].name {
			continue
		}
		out = append(out, xs[j])
	}
	return out
}

// appendValue appends the value of xattr x of inode in to dst.
func (l *layout) appendValue(dst []byte, in *inode, x *xattr) []byte {
	switch x.kind {
	case valueSource:
		return append(dst, in.src.Xattrs[x.src].Value...)
	case valueMetacopy:
		if in.src.Digest == nil {
			return dst
		}
		dst = append(dst, 0, MetacopySize, 0, MetacopyHashAlgSHA256)
		return append(dst, in.src.Digest...)
	case valueRedirect:
		return append(append(dst, '/'), in.src.Payload...)
	case valueOpaqueX:
		return append(dst, 'x')
	case valueOpaqueY:
		return append(dst, 'y')
	case valueRootSelinux:
		return append(dst, l.rootSelinux...)
	}
	return dst
}

// valueLen is len(appendValue(nil, in, x)).
func (l *layout) valueLen(in *inode, x *xattr) int {
	switch x.kind {
	case valueSource:
		return len(in.src.Xattrs[x.src].Value)
	case valueMetacopy:
		if in.src.Digest == nil {
			return 0
		}
		return MetacopySize
	case valueRedirect:
		return 1 + len(in.src.Payload)
	case valueOpaqueX, valueOpaqueY:
		return 1
	case valueRootSelinux:
		return len(l.rootSelinux)
	}
	return 0
}

// entrySize is the padded size of an xattr entry (§7.2).
func (l *layout) entrySize(x *xattr) uint64 {
	return uint64(XattrEntrySize+len(l.names[x.name].suffix)+int(x.vlen)+3) &^ 3
}

// shareTable finds equal (name, value) pairs while computeXattrs builds
// the xattrs, with an open-addressing table of xattr indexes. While it
// runs, xattr.shared holds -1 for the first of its kind, minus the count
// for the first of a pair used more than once (a representative), and for
// the others the index of their representative.
type shareTable struct {
	slots      []uint64 // hash<<32 | xattr index+1
	mask       uint64
	seed       maphash.Seed
	owner      []int32 // inode of each xattr
	reps       []int32
	bufA, bufB []byte
}

func newShareTable(capacity int) *shareTable {
	// At most 2/3 full (capacity is an upper bound of the xattrs).
	size := 1 << bits.Len(uint(max(capacity, 8))*3/2)
	return &shareTable{slots: make([]uint64, size), mask: uint64(size - 1), seed: maphash.MakeSeed(), owner: make([]int32, 0, capacity)}
}

// insert adds xattr i of inode owner, whose hash is h (indexes must come
// in order).
func (st *shareTable) insert(l *layout, owner, i int32, h uint64) {
	st.owner = append(st.owner, owner)
	xs := l.xattrs
	x := &xs[i]
	in := &l.inodes[owner]
	tag := h >> 32
	for p := h & st.mask; ; p = (p + 1) & st.mask {
		s := st.slots[p]
		if s == 0 {
			st.slots[p] = tag<<32 | uint64(i+1)
			x.shared = -1
			return
		}
		if s>>32 != tag {
			continue
		}
		r := int32(s&0xffffffff) - 1
		y := &xs[r]
		if y.name != x.name || y.vlen != x.vlen || !st.equal(l, in, x, &l.inodes[st.owner[r]], y) {
			continue
		}
		if y.shared == -1 {
			st.reps = append(st.reps, r)
		}
		y.shared--
		x.shared = r
		return
	}
}

// hash hashes an xattr's name and value without copying the value where it
// can: a metacopy's value is named by its fs-verity digest, itself a hash.
// Metacopy and redirect names carry no other kind of value (source
// trusted.overlay.* names are escaped), so their hashes need not agree with
// the byte hash the other kinds use.
// buf is scratch space, returned for reuse. hash is safe for concurrent use.
func (st *shareTable) hash(l *layout, in *inode, x *xattr, buf []byte) (uint64, []byte) {
	var h uint64
	switch x.kind {
	case valueMetacopy:
		if d := in.src.Digest; d != nil {
			h = wle.Uint64(d) ^ wle.Uint64(d[8:])
		}
	case valueRedirect:
		h = maphash.String(st.seed, in.src.Payload)
	case valueSource:
		h = maphash.Bytes(st.seed, in.src.Xattrs[x.src].Value)
	default:
		buf = l.appendValue(buf[:0], in, x)
		h = maphash.Bytes(st.seed, buf)
	}
	return h ^ (uint64(x.name)+1)*0x9E3779B97F4A7C15, buf
}

// equal reports whether two xattrs with the same name and value length
// have the same value.
func (st *shareTable) equal(l *layout, ia *inode, a *xattr, ib *inode, b *xattr) bool {
	switch {
	case a.kind == valueMetacopy && b.kind == valueMetacopy:
		return bytes.Equal(ia.src.Digest, ib.src.Digest)
	case a.kind == valueRedirect && b.kind == valueRedirect:
		return ia.src.Payload == ib.src.Payload
	case a.kind == valueSource && b.kind == valueSource:
		return bytes.Equal(ia.src.Xattrs[a.src].Value, ib.src.Xattrs[b.src].Value)
	}
	st.bufA = l.appendValue(st.bufA[:0], ia, a)
	st.bufB = l.appendValue(st.bufB[:0], ib, b)
	return bytes.Equal(st.bufA, st.bufB)
}

// computeShared lays out the shared xattr table (§7.4) from the pairs the
// share table found used by more than one inode. Each inode references the
// first MaxSharedXattrRefs of its shared xattrs.
func (l *layout) computeShared(st *shareTable) {
	xs := l.xattrs
	owner := st.owner
	reps := st.reps
	bufA, bufB := st.bufA, st.bufB
	// The table: descending by name, then value length, then value bytes.
	slices.SortFunc(reps, func(a, b int32) int {
		xa, xb := &xs[a], &xs[b]
		if c := strings.Compare(l.names[xb.name].name, l.names[xa.name].name); c != 0 {
			return c
		}
		ia, ib := &l.inodes[owner[a]], &l.inodes[owner[b]]
		if xa.vlen != xb.vlen {
			return int(xb.vlen) - int(xa.vlen)
		}
		bufA = l.appendValue(bufA[:0], ia, xa)
		bufB = l.appendValue(bufB[:0], ib, xb)
		return bytes.Compare(bufB, bufA)
	})
	var off uint64
	for _, r := range reps {
		xs[r].rep = true
		xs[r].shared = int32(off)
		off += l.entrySize(&xs[r])
	}
	l.shared = reps
	l.owner = make([]int32, len(reps))
	for k, r := range reps {
		l.owner[k] = owner[r]
	}
	l.sharedSize = off
	// The others take their representative's offset (representatives come
	// first, so they hold their offsets already); unique ones are inline.
	for i := range xs {
		x := &xs[i]
		switch {
		case x.rep:
		case x.shared >= 0:
			x.shared = xs[x.shared].shared
		default:
			x.shared = -1
		}
	}
	// At most MaxSharedXattrRefs references per inode; the rest inline.
	for i := range l.inodes {
		in := &l.inodes[i]
		n := 0
		for j := in.xattrStart; j < in.xattrStart+in.nXattrs; j++ {
			if xs[j].shared >= 0 {
				if n < MaxSharedXattrRefs {
					n++
				} else {
					xs[j].shared = -1
				}
			}
		}
		in.nShared = uint8(n)
	}
}

// computeSizes decides each inode's record size, xattr area, inline tail
// and data blocks (§6.1–§6.4).
func (l *layout) computeSizes() error {
	for i := range l.inodes {
		in := &l.inodes[i]
		if in.nXattrs > 0 {
			sz := uint64(XattrHeaderSize) + 4*uint64(in.nShared)
			for j := in.xattrStart; j < in.xattrStart+in.nXattrs; j++ {
				if x := &l.xattrs[j]; x.shared < 0 {
					sz += l.entrySize(x)
				}
			}
			if (sz-XattrHeaderSize)/4+1 > 0xffff {
				return fmt.Errorf("%s: xattrs need %d bytes, more than an inode can hold", l.inodePath(i), sz)
			}
			in.xattrSize = uint32(sz)
		}
		size := l.iSize(in)
		switch in.typ() {
		case tree.TypeDir:
			in.nBlocks, in.tail = l.dirSize(in)
			size = uint64(in.nBlocks)*BlockSize + uint64(in.tail)
		case tree.TypeReg:
			switch {
			case in.flags&inodeExternal != 0:
				cb := chunkBits(size)
				in.tail = uint16((size + 1<<cb - 1) >> cb * 4)
				in.u = uint32(cb - BlockBits)
			case size > 0:
				in.nBlocks = uint32(size / BlockSize)
				in.tail = uint16(size % BlockSize)
				if in.tail > BlockSize/2 {
					in.nBlocks++
					in.tail = 0
				}
			}
		}
		uid, gid, mtime := l.owner3(in)
		if mtime == l.buildTime && in.nlink <= 0xffff && uid <= 0xffff && gid <= 0xffff && size <= 0xffffffff {
			in.flags |= inodeCompact
		}
		if in.typ() == tree.TypeLink {
			if in.recordSize()+uint64(in.xattrSize)+size >= BlockSize {
				in.flags |= inodeSymlinkBlock
				in.nBlocks = 1
			} else {
				in.tail = uint16(size)
			}
		}
	}
	return nil
}

// chunkBits is the chunk size (log2) of an external file (§6.3).
func chunkBits(size uint64) uint {
	cb := uint(bits.Len64(size - 1))
	return min(max(cb, BlockBits), MaxChunkBits)
}

// iSize is the inode's i_size for everything but directories (whose size
// dirSize decides).
func (l *layout) iSize(in *inode) uint64 {
	if in.src == nil || in.flags&inodeWhiteout != 0 {
		return 0
	}
	switch in.typ() {
	case tree.TypeReg:
		return in.src.Size
	case tree.TypeLink:
		return uint64(len(in.src.Target))
	case tree.TypeDir:
		return uint64(in.nBlocks)*BlockSize + uint64(in.tail)
	}
	return 0
}

// owner3 returns the inode's uid, gid and mtime (the root's for stubs).
func (l *layout) owner3(in *inode) (uint32, uint32, tree.Timespec) {
	n := in.src
	if n == nil {
		n = l.root
	}
	return n.UID, n.GID, n.Mtime
}

// format returns i_format (§6.1, §6.2).
func (in *inode) format() uint16 {
	var layout uint16 = LayoutFlatPlain
	switch {
	case in.flags&inodeExternal != 0:
		layout = LayoutChunkBased
	case in.tail > 0:
		layout = LayoutFlatInline
	}
	f := layout << 1
	if in.flags&inodeCompact == 0 {
		f |= InodeFormatExtended
	}
	return f
}

func (l *layout) inodePath(i int) string {
	if s := l.inodes[i].src; s != nil {
		return s.Path()
	}
	return "/ (whiteout stub)"
}

// dirSize returns the full blocks and inline tail of a directory (§6.3, §11).
func (l *layout) dirSize(in *inode) (uint32, uint16) {
	var nb, used uint32
	for k := in.direntStart; k < in.direntStart+in.nDirents; k++ {
		n := uint32(DirentSize + len(l.dirents[k].name()))
		if used+n > BlockSize {
			nb++
			used = 0
		}
		used += n
	}
	if used > BlockSize/2 {
		nb++
		used = 0
	}
	return nb, uint16(used)
}

// place assigns positions (nids) and data blocks (§6.5, §12).
func (l *layout) place() {
	pos := uint64(InodesStart)
	for i := range l.inodes {
		in := &l.inodes[i]
		pos = roundUp(pos, SlotSize)
		nonTail := in.recordSize() + uint64(in.xattrSize)
		if in.typ() == tree.TypeLink {
			total := nonTail + l.iSize(in)
			if pos/BlockSize != (pos+total-1)/BlockSize {
				pos = roundUp(pos, BlockSize)
			}
		} else if in.tail > 0 {
			rem := BlockSize - (pos+nonTail)%BlockSize
			if uint64(in.tail) > rem {
				pad := roundUp(rem, SlotSize)
				rem2 := BlockSize - (pos+nonTail+pad)%BlockSize
				if uint64(in.tail) <= rem2 {
					pos += pad
				} else {
					// The chunk table cannot be inline: a data block of 0xFF.
					pos = roundUp(pos, BlockSize)
					in.tail = 0
					in.nBlocks++
					in.flags |= inodeChunkBlock
				}
			}
		}
		in.pos = pos
		pos += nonTail + uint64(in.tail)
		l.nBlocks += uint64(in.nBlocks)
	}
	l.inodesEnd = roundUp(pos, SlotSize)
	l.dataStart = roundUp(l.inodesEnd+l.sharedSize, BlockSize)
	next := l.dataStart / BlockSize
	for i := range l.inodes {
		in := &l.inodes[i]
		if in.nBlocks > 0 {
			in.blkaddr = uint32(next)
			next += uint64(in.nBlocks)
			if in.flags&inodeChunkBlock != 0 {
				// The union of i_u: the chunk format overwrites the low 16
				// bits of the block address.
				in.u = in.blkaddr&0xffff0000 | in.u&0xffff
			} else {
				in.u = in.blkaddr
			}
		}
	}
	l.size = next * BlockSize
}

func roundUp(v, align uint64) uint64 { return (v + align - 1) &^ (align - 1) }
