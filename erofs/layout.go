package erofs

import (
	"bytes"
	"errors"
	"fmt"
	"math/bits"
	"slices"
	"strings"

	"github.com/mossfs/mossfs/internal/tree"
)

// This file computes where everything of an image goes, as a pure function
// of the source tree and the options (computeLayout). writer.go turns the
// result into bytes. The rules are those of mkcomposefs 1.0.8; section
// numbers refer to shared/reference/composefs-format.md.

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
)

// inode is the layout of one inode record. Indexes into layout.inodes are
// the inode numbers (i_ino), in breadth-first order.
type inode struct {
	src   *tree.Node // nil for the root's whiteout stubs
	mode  uint16     // i_mode as stored (whiteouts become regular files)
	flags uint8
	ftype uint8 // dirent file type
	// i_format, i_xattr_icount, i_size, i_u
	format uint16
	icount uint16
	size   uint64
	u      uint32
	nlink  uint32
	uid    uint32
	gid    uint32
	mtime  tree.Timespec

	// Stored xattrs: layout.xattrs[xattrStart:xattrEnd], sorted by name.
	xattrStart, xattrEnd int32
	nShared              int32  // how many of them are referenced shared
	xattrSize            uint32 // bytes of the xattr area (0: none)
	// Directory entries: layout.dirents[direntStart:direntEnd].
	direntStart, direntEnd int32

	tail    uint32 // bytes inline after the xattrs
	nBlocks uint32 // data blocks
	blkaddr uint32 // first data block (when nBlocks > 0)
	pos     uint64 // byte offset of the record (nid = pos / 32)
}

func (in *inode) recordSize() uint64 {
	if in.flags&inodeCompact != 0 {
		return InodeCompactSize
	}
	return InodeExtendedSize
}

func (in *inode) typ() uint32 { return uint32(in.mode) & tree.TypeMask }

// storedXattr is an xattr as written: escaped full name, the e_name_index
// and suffix it is stored under, and the value.
type storedXattr struct {
	name   string
	value  []byte
	shared int32 // byte offset in the shared table, or -1 when stored inline
}

// dirent is one directory entry (including "." and "..").
type dirent struct {
	name  string
	inode int32 // index into layout.inodes
}

// layout is everything computeLayout decides about an image.
type layout struct {
	version   int
	hasACL    bool
	buildTime tree.Timespec
	inodes    []inode
	xattrs    []storedXattr
	dirents   []dirent
	shared    []int32 // indexes into xattrs of the shared table's entries, in table order

	inodesEnd  uint64 // end of the inode area, 32-aligned; the shared table starts here
	sharedSize uint64
	dataStart  uint64 // first data block (byte offset)
	nBlocks    uint64 // data blocks
	size       uint64 // image size
}

var (
	dotName    = "."
	dotdotName = ".."
	// stubNames are the names of the 256 whiteout stubs of the root (§10).
	stubNames = func() [256]string {
		var s [256]string
		const hex = "0123456789abcdef"
		for i := range s {
			s[i] = string([]byte{hex[i>>4], hex[i&15]})
		}
		return s
	}()
)

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
	l := &layout{}
	b := &layoutBuilder{l: l}
	if err := b.collect(root); err != nil {
		return nil, err
	}
	l.version = opts.MinVersion
	if b.hasWhiteout && opts.MaxVersion >= 1 {
		l.version = 1
	}
	if err := b.computeInodes(); err != nil {
		return nil, err
	}
	l.computeShared()
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
	index       map[*tree.Node]int32 // inode index of hardlink targets
	parents     []int32              // inode index of each inode's parent directory
	scratch     []*tree.Node
}

type pendingDirent struct {
	dirent int32
	target *tree.Node
	path   *tree.Node
}

func isUserWhiteout(n *tree.Node) bool {
	return n.Mode&tree.TypeMask == tree.TypeChar && n.Rdev == 0
}

// collect numbers the inodes breadth-first and builds every directory's
// sorted entries (§5), with ".", ".." and, in the root, the whiteout stubs.
func (b *layoutBuilder) collect(root *tree.Node) error {
	l := b.l
	l.inodes = append(l.inodes, inode{src: root})
	b.parents = append(b.parents, 0) // the root's ".." is the root
	var linkCount int
	for i := 0; i < len(l.inodes); i++ {
		in := &l.inodes[i]
		n := in.src
		if n == nil || n.Mode&tree.TypeMask != tree.TypeDir {
			continue
		}
		kids, err := b.sortedChildren(n)
		if err != nil {
			return err
		}
		start := int32(len(l.dirents))
		self := int32(i)
		// Merge ".", "..", the stubs (root only) and the children in strcmp order.
		var stubs []string
		if n == root {
			stubs = b.missingStubs(kids)
		}
		dotsDone := 0
		emitDots := func(before string) {
			for dotsDone < 2 {
				name := dotName
				if dotsDone == 1 {
					name = dotdotName
				}
				if before != "" && name >= before {
					return
				}
				target := self
				if dotsDone == 1 {
					target = b.parents[i]
				}
				l.dirents = append(l.dirents, dirent{name: name, inode: target})
				dotsDone++
			}
		}
		si := 0
		emitStubs := func(before string) {
			for si < len(stubs) && (before == "" || stubs[si] < before) {
				emitDots(stubs[si])
				l.inodes = append(l.inodes, inode{mode: tree.TypeChar | 0o644, nlink: 1})
				b.parents = append(b.parents, self)
				in = &l.inodes[i] // append may have moved it
				idx := int32(len(l.inodes) - 1)
				l.dirents = append(l.dirents, dirent{name: stubs[si], inode: idx})
				si++
			}
		}
		for _, c := range kids {
			emitStubs(c.Name)
			emitDots(c.Name)
			if c.LinkTo != nil {
				linkCount++
				b.links = append(b.links, pendingDirent{dirent: int32(len(l.dirents)), target: c.LinkTo, path: c})
				l.dirents = append(l.dirents, dirent{name: c.Name, inode: -1})
				continue
			}
			if isUserWhiteout(c) {
				b.hasWhiteout = true
				l.inodes[i].flags |= inodeHasWhiteout
			}
			l.inodes = append(l.inodes, inode{src: c})
			b.parents = append(b.parents, self)
			in = &l.inodes[i]
			l.dirents = append(l.dirents, dirent{name: c.Name, inode: int32(len(l.inodes) - 1)})
		}
		emitStubs("")
		emitDots("")
		in = &l.inodes[i]
		in.direntStart, in.direntEnd = start, int32(len(l.dirents))
	}
	if len(b.links) > 0 {
		return b.resolveLinks()
	}
	return nil
}

// sortedChildren returns n's children in strcmp order, checking names.
func (b *layoutBuilder) sortedChildren(n *tree.Node) ([]*tree.Node, error) {
	kids := n.Children
	sorted := slices.IsSortedFunc(kids, func(a, c *tree.Node) int { return strings.Compare(a.Name, c.Name) })
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
	if !sorted {
		// The scratch slice is reused for the next directory: copy.
		kids = slices.Clone(kids)
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

// missingStubs returns, sorted, the names 00…ff that are not children.
func (b *layoutBuilder) missingStubs(kids []*tree.Node) []string {
	out := make([]string, 0, 256)
	k := 0
	for _, s := range stubNames {
		for k < len(kids) && kids[k].Name < s {
			k++
		}
		if k < len(kids) && kids[k].Name == s {
			continue
		}
		out = append(out, s)
	}
	return out
}

func (b *layoutBuilder) resolveLinks() error {
	l := b.l
	b.index = make(map[*tree.Node]int32, len(b.links))
	for _, p := range b.links {
		b.index[p.target] = -1
	}
	for i := range l.inodes {
		if s := l.inodes[i].src; s != nil {
			if _, ok := b.index[s]; ok {
				b.index[s] = int32(i)
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
		idx := b.index[t]
		if idx < 0 {
			return fmt.Errorf("%s: hardlink target %s is not in the tree", p.path.Path(), t.Path())
		}
		l.dirents[p.dirent].inode = idx
	}
	return nil
}

// computeInodes fills in each inode's metadata and stored xattrs (§6, §8–§10).
func (b *layoutBuilder) computeInodes() error {
	l := b.l
	root := l.inodes[0].src
	rootSelinux, hasRootSelinux := root.Xattr(XattrSelinux)
	if !hasRootSelinux {
		// tree.Node.Xattr needs sorted xattrs: look linearly to be safe.
		for _, x := range root.Xattrs {
			if x.Name == XattrSelinux {
				rootSelinux, hasRootSelinux = x.Value, true
			}
		}
	}
	first := true
	for i := range l.inodes {
		in := &l.inodes[i]
		n := in.src
		xstart := int32(len(l.xattrs))
		if n == nil {
			// Whiteout stub: char 0:0, 0644, the root's owner and mtime.
			in.uid, in.gid, in.mtime = root.UID, root.GID, root.Mtime
			in.ftype = FileTypeChr
			if hasRootSelinux {
				l.xattrs = append(l.xattrs, storedXattr{name: XattrSelinux, value: rootSelinux})
			}
		} else {
			if err := checkNode(n); err != nil {
				return err
			}
			in.mode = uint16(n.Mode)
			in.uid, in.gid, in.mtime = n.UID, n.GID, n.Mtime
			in.nlink = n.Nlink
			typ := n.Mode & tree.TypeMask
			for _, x := range n.Xattrs {
				name := x.Name
				if strings.HasPrefix(name, XattrOverlayPrefix) {
					name = XattrOverlayEscPrefix + name[len(XattrOverlayPrefix):]
				}
				l.xattrs = append(l.xattrs, storedXattr{name: name, value: x.Value})
			}
			switch typ {
			case tree.TypeDir:
				in.ftype = FileTypeDir
				nl := uint32(2)
				for _, d := range l.dirents[in.direntStart:in.direntEnd] {
					if d.inode > int32(i) && d.name != dotdotName && d.name != dotName {
						if c := l.inodes[d.inode].src; c != nil && c.Mode&tree.TypeMask == tree.TypeDir {
							nl++
						}
					}
				}
				in.nlink = nl
				if in.flags&inodeHasWhiteout != 0 {
					l.setXattr(xstart, XattrEscWhiteouts, nil)
					l.setXattr(xstart, XattrUserWhiteouts, nil)
					if l.version >= 1 {
						l.setXattr(xstart, XattrEscOpaque, opaqueX)
						l.setXattr(xstart, XattrUserOpaque, opaqueX)
					}
				}
				if i == 0 {
					l.setXattr(xstart, XattrOpaque, opaqueY)
				}
			case tree.TypeReg:
				in.ftype = FileTypeReg
				in.size = n.Size
				if n.Size > 0 && n.Content == nil {
					var mc []byte
					if n.Digest != nil {
						mc = make([]byte, MetacopySize)
						mc[1] = MetacopySize
						mc[3] = MetacopyHashAlgSHA256
						copy(mc[MetacopyHeaderSize:], n.Digest)
					} else {
						mc = []byte{}
					}
					l.setXattr(xstart, XattrMetacopy, mc)
					if n.Payload != "" {
						l.setXattr(xstart, XattrRedirect, []byte("/"+n.Payload))
					}
				}
			case tree.TypeLink:
				in.ftype = FileTypeSymlink
				in.size = uint64(len(n.Target))
			case tree.TypeChar:
				in.ftype = FileTypeChr
				in.u = n.Rdev
				if n.Rdev == 0 {
					// User whiteout: stored as an escaped whiteout file (§9).
					in.flags |= inodeWhiteout
					in.ftype = FileTypeReg
					in.mode = uint16(tree.TypeReg | n.Mode&^tree.TypeMask)
					in.u = 0
					l.setXattr(xstart, XattrEscWhiteout, nil)
					l.setXattr(xstart, XattrUserWhiteout, nil)
				}
			case tree.TypeBlock:
				in.ftype = FileTypeBlk
				in.u = n.Rdev
			case tree.TypeFifo:
				in.ftype = FileTypeFifo
			case tree.TypeSock:
				in.ftype = FileTypeSock
			}
			if typ != tree.TypeChar && typ != tree.TypeBlock {
				in.u = 0
			}
		}
		xs := l.xattrs[xstart:]
		sortStoredXattrs(xs)
		// Later values for the same name win; setXattr already replaced
		// in place, but source xattrs may repeat a name.
		xs = dedupStoredXattrs(xs)
		l.xattrs = l.xattrs[:int(xstart)+len(xs)]
		in.xattrStart, in.xattrEnd = xstart, int32(len(l.xattrs))
		for _, x := range xs {
			if x.name == XattrACLAccess || x.name == XattrACLDflt {
				l.hasACL = true
			}
		}
		if first || in.mtime.Sec < l.buildTime.Sec || (in.mtime.Sec == l.buildTime.Sec && in.mtime.Nsec < l.buildTime.Nsec) {
			l.buildTime = in.mtime
			first = false
		}
	}
	return nil
}

var (
	opaqueX = []byte("x")
	opaqueY = []byte("y")
)

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

// setXattr sets a stored xattr of the inode whose xattrs start at start
// (the inode's xattrs are the tail of l.xattrs), replacing an earlier value.
func (l *layout) setXattr(start int32, name string, value []byte) {
	if value == nil {
		value = []byte{}
	}
	for i := int(start); i < len(l.xattrs); i++ {
		if l.xattrs[i].name == name {
			l.xattrs[i].value = value
			return
		}
	}
	l.xattrs = append(l.xattrs, storedXattr{name: name, value: value})
}

// sortStoredXattrs sorts by name, stably (few per inode: insertion sort).
func sortStoredXattrs(xs []storedXattr) {
	for i := 1; i < len(xs); i++ {
		for j := i; j > 0 && xs[j-1].name > xs[j].name; j-- {
			xs[j-1], xs[j] = xs[j], xs[j-1]
		}
	}
}

func dedupStoredXattrs(xs []storedXattr) []storedXattr {
	out := xs[:0]
	for j := range xs {
		if j+1 < len(xs) && xs[j+1].name == xs[j].name {
			continue
		}
		out = append(out, xs[j])
	}
	return out
}

// xattrEntrySize is the padded size of an xattr entry (§7.2).
func xattrEntrySize(name string, valueLen int) uint64 {
	_, suffix := SplitXattrName(name)
	return uint64(XattrEntrySize+len(suffix)+valueLen+3) &^ 3
}

// computeShared finds the (name, value) pairs used by more than one inode
// and lays out the shared xattr table (§7.4). Each inode references the
// first MaxSharedXattrRefs of its shared xattrs.
func (l *layout) computeShared() {
	type entry struct {
		count  int32
		first  int32 // index in l.xattrs
		offset int32
	}
	m := make(map[string]*entry, len(l.xattrs))
	keys := make([]string, len(l.xattrs))
	var sharedEntries []*entry
	for i := range l.xattrs {
		x := &l.xattrs[i]
		k := x.name + "\x00" + string(x.value)
		keys[i] = k
		e := m[k]
		if e == nil {
			e = &entry{first: int32(i)}
			m[k] = e
		}
		e.count++
		if e.count == 2 {
			sharedEntries = append(sharedEntries, e)
		}
	}
	slices.SortFunc(sharedEntries, func(a, b *entry) int {
		xa, xb := &l.xattrs[a.first], &l.xattrs[b.first]
		if c := strings.Compare(xb.name, xa.name); c != 0 {
			return c
		}
		if len(xa.value) != len(xb.value) {
			return len(xb.value) - len(xa.value)
		}
		return bytes.Compare(xb.value, xa.value)
	})
	var off uint64
	for _, e := range sharedEntries {
		e.offset = int32(off)
		x := &l.xattrs[e.first]
		l.shared = append(l.shared, e.first)
		off += xattrEntrySize(x.name, len(x.value))
	}
	l.sharedSize = off
	for i := range l.inodes {
		in := &l.inodes[i]
		n := int32(0)
		for j := in.xattrStart; j < in.xattrEnd; j++ {
			e := m[keys[j]]
			if e.count > 1 && n < MaxSharedXattrRefs {
				l.xattrs[j].shared = e.offset
				n++
			} else {
				l.xattrs[j].shared = -1
			}
		}
		in.nShared = n
	}
}

// computeSizes decides each inode's record size, xattr area, inline tail
// and data blocks (§6.1–§6.4).
func (l *layout) computeSizes() error {
	for i := range l.inodes {
		in := &l.inodes[i]
		// Xattr area.
		if in.xattrEnd > in.xattrStart {
			sz := uint64(XattrHeaderSize) + 4*uint64(in.nShared)
			for j := in.xattrStart; j < in.xattrEnd; j++ {
				x := &l.xattrs[j]
				if x.shared < 0 {
					sz += xattrEntrySize(x.name, len(x.value))
				}
			}
			sz = (sz + 3) &^ 3
			icount := (sz-XattrHeaderSize)/4 + 1
			if icount > 0xffff {
				return fmt.Errorf("%s: xattrs need %d bytes, more than an inode can hold", l.inodePath(i), sz)
			}
			in.xattrSize = uint32(sz)
			in.icount = uint16(icount)
		}
		// Data size, tail and blocks.
		layoutKind := uint16(LayoutFlatPlain)
		switch in.typ() {
		case tree.TypeDir:
			nb, tail := l.dirSize(in)
			in.nBlocks, in.tail = nb, tail
			in.size = uint64(nb)*BlockSize + uint64(tail)
		case tree.TypeReg:
			switch {
			case in.flags&inodeWhiteout != 0 || in.size == 0:
			case in.src.Content != nil:
				in.nBlocks = uint32(in.size / BlockSize)
				in.tail = uint32(in.size % BlockSize)
				if in.tail > BlockSize/2 {
					in.nBlocks++
					in.tail = 0
				}
			default:
				cb := uint32(bits.Len64(in.size - 1))
				if cb < BlockBits {
					cb = BlockBits
				}
				if cb > MaxChunkBits {
					cb = MaxChunkBits
				}
				nchunks := (in.size + 1<<cb - 1) >> cb
				in.tail = uint32(nchunks * 4)
				in.u = cb - BlockBits
				layoutKind = LayoutChunkBased
			}
		}
		compact := in.mtime == l.buildTime && in.nlink <= 0xffff && in.uid <= 0xffff && in.gid <= 0xffff && in.size <= 0xffffffff
		if compact {
			in.flags |= inodeCompact
		}
		if in.typ() == tree.TypeLink {
			if in.recordSize()+uint64(in.xattrSize)+in.size >= BlockSize {
				in.flags |= inodeSymlinkBlock
				in.nBlocks = 1
			} else {
				in.tail = uint32(in.size)
			}
		}
		if layoutKind != LayoutChunkBased && in.tail > 0 {
			layoutKind = LayoutFlatInline
		}
		in.format = layoutKind << 1
		if !compact {
			in.format |= InodeFormatExtended
		}
	}
	return nil
}

func (l *layout) inodePath(i int) string {
	if s := l.inodes[i].src; s != nil {
		return s.Path()
	}
	return "/ (whiteout stub)"
}

// dirSize returns the full blocks and inline tail of a directory (§6.3, §11).
func (l *layout) dirSize(in *inode) (uint32, uint32) {
	var nb, used uint32
	for _, d := range l.dirents[in.direntStart:in.direntEnd] {
		n := uint32(DirentSize + len(d.name))
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
	return nb, used
}

// place assigns positions (nids) and data blocks (§6.5, §12).
func (l *layout) place() {
	pos := uint64(InodesStart)
	for i := range l.inodes {
		in := &l.inodes[i]
		pos = roundUp(pos, SlotSize)
		nonTail := in.recordSize() + uint64(in.xattrSize)
		if in.typ() == tree.TypeLink {
			total := nonTail + in.size
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
			switch {
			case in.flags&inodeChunkBlock != 0:
				// The union of i_u: chunk format in the low 16 bits.
				in.u = in.blkaddr&0xffff0000 | in.u&0xffff
			default:
				in.u = in.blkaddr
			}
		}
	}
	l.size = next * BlockSize
}

func roundUp(v, align uint64) uint64 { return (v + align - 1) &^ (align - 1) }
