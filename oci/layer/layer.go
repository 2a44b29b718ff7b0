// Package layer applies OCI image layers (tar streams) in order onto one
// tree (package tree), as a container runtime's root filesystem sees them:
// OCI whiteouts (.wh.NAME) remove NAME from the layers below, opaque
// directories (.wh..wh..opq) hide everything the layers below put there,
// neither appears in the result; hardlinks stay hardlinks, xattrs
// (security.capability included), devices, modes, owners and times are kept.
// Regular files larger than InlineMax go to a Store; smaller ones are inline.
//
// Layers are untrusted input. A path with "..", an absolute path, a parent
// that resolves (through symlinks of the tree) outside the root, a hardlink
// to a missing file, a directory or outside the root, a bare ".wh." or a
// whiteout of the root, an unknown entry type, and streams past the caps
// (Limits: uncompressed bytes, expansion ratio, entry count) are refused with
// an error naming the layer and the entry; nothing is clamped. The tree is
// then in an undefined state: callers build a new one per pull.
//
// Besides the merged tree, Apply returns the layer's own tree, as the layer
// spells it (whiteout entries kept as empty files), so an image can be
// exported again as itself.
package layer

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/mossfs/mossfs/tree"
)

// InlineMax is the largest regular file kept inline in the tree (as
// dirimport and mkcomposefs do); larger ones are stored as objects.
const InlineMax = 64

// Default caps (see Limits).
const (
	DefaultMaxLayerBytes = 64 << 30
	DefaultRatio         = 200
	DefaultRatioAfter    = 1 << 30
	DefaultMaxEntries    = 10_000_000
)

// Limits cap what a pull may expand to. Zero values take the defaults.
type Limits struct {
	// MaxLayerBytes: uncompressed bytes of one layer.
	MaxLayerBytes int64
	// Ratio: uncompressed/compressed bytes, checked once a layer is past
	// RatioAfter uncompressed bytes.
	Ratio      int64
	RatioAfter int64
	// MaxEntries: tar entries of the whole image.
	MaxEntries int
}

func (l Limits) withDefaults() Limits {
	if l.MaxLayerBytes <= 0 {
		l.MaxLayerBytes = DefaultMaxLayerBytes
	}
	if l.Ratio <= 0 {
		l.Ratio = DefaultRatio
	}
	if l.RatioAfter <= 0 {
		l.RatioAfter = DefaultRatioAfter
	}
	if l.MaxEntries <= 0 {
		l.MaxEntries = DefaultMaxEntries
	}
	return l
}

// ErrLimit is wrapped by errors for streams past a cap.
var ErrLimit = errors.New("decompression cap exceeded")

// InlineKeeper is the optional part of a Store that also keeps the contents
// of files small enough to stay inline in the tree (the tree still inlines
// them): a store indexed by sha256 offers them to partial pulls that way.
type InlineKeeper interface {
	KeepInline(b []byte) error
}

// Store keeps regular files' contents.
type Store interface {
	// Put stores the content read from r and returns the fs-verity digest
	// the tree records.
	Put(r io.Reader) ([32]byte, error)
}

// EntryStore is a Store that also wants to know which tar entry a content
// belongs to: the applier calls PutEntry instead of Put.
type EntryStore interface {
	Store
	PutEntry(h *tar.Header, r io.Reader) ([32]byte, error)
}

// CapReader counts the uncompressed bytes read from r (a layer's tar
// stream) and fails, while streaming, once they pass the caps: more than
// MaxLayerBytes, or, past RatioAfter, more than Ratio times compressedSize.
func CapReader(r io.Reader, compressedSize int64, lim Limits, layerName string) io.Reader {
	return &capReader{r: r, compressed: compressedSize, lim: lim.withDefaults(), name: layerName}
}

type capReader struct {
	r          io.Reader
	n          int64
	compressed int64
	lim        Limits
	name       string
}

func (c *capReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if c.n > c.lim.MaxLayerBytes {
		return n, fmt.Errorf("layer %s expands past %d bytes (--max-layer-bytes): %w", c.name, c.lim.MaxLayerBytes, ErrLimit)
	}
	if c.n > c.lim.RatioAfter && c.compressed > 0 && c.n/c.compressed > c.lim.Ratio {
		return n, fmt.Errorf("layer %s expands past %d× its compressed size of %d bytes (%d bytes so far; --max-ratio): %w", c.name, c.lim.Ratio, c.compressed, c.n, ErrLimit)
	}
	return n, err
}

// Applier applies the layers of one image, in order.
type Applier struct {
	// Root is the merged tree so far.
	Root    *tree.Node
	store   Store
	lim     Limits
	entries int
	// links lists the hardlinks (LinkTo) to each inode node, so removing
	// or replacing the node keeps the inode alive in one of them.
	links map[*tree.Node][]*tree.Node
}

// NewApplier starts an image with an empty root directory, root-owned,
// 0755 until a layer has an entry for the root. (podman shows the root of
// an image none of whose layers has a root entry as 0555, containers/
// storage's mode for a layer's root; export writes layers without one and
// records the composefs digest of a 0755 root, so that is kept here.)
func NewApplier(store Store, lim Limits) *Applier {
	return &Applier{Root: tree.NewDir("", 0o755), store: store, lim: lim.withDefaults(), links: map[*tree.Node][]*tree.Node{}}
}

// Entries is the number of tar entries applied so far.
func (a *Applier) Entries() int { return a.entries }

// Apply reads one layer's uncompressed tar stream and applies it. name is
// used in errors (the layer's digest). It returns the layer's own tree.
func (a *Applier) Apply(r io.Reader, name string) (*tree.Node, error) {
	return a.ApplyCompressed(r, name, 0)
}

// ApplyCompressed is Apply for a layer of compressedSize bytes: the caps
// also hold for the files' sizes as the tar headers give them (a sparse
// entry expands without reading its stream, so CapReader cannot see it).
func (a *Applier) ApplyCompressed(r io.Reader, name string, compressedSize int64) (*tree.Node, error) {
	l := a.Layer(name, compressedSize)
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("layer %s: reading tar: %w", name, err)
		}
		if err := l.Entry(h, tr); err != nil {
			return nil, err
		}
	}
	// Drain what follows the end-of-archive marker, so the caller's digest
	// of the whole stream is complete.
	if _, err := io.Copy(io.Discard, r); err != nil {
		return nil, fmt.Errorf("layer %s: %w", name, err)
	}
	return l.End(), nil
}

// LayerApply is one layer being applied entry by entry, for a caller that
// has the layer's tar headers in hand (a writer of the layer) rather than
// a tar stream to parse. Apply is Layer, Entry for each header the tar
// reader returns, then End.
type LayerApply struct{ ap *apply }

// Layer starts applying a layer (name and compressedSize as for
// ApplyCompressed).
func (a *Applier) Layer(name string, compressedSize int64) *LayerApply {
	return &LayerApply{&apply{a: a, name: name, created: map[*tree.Node]bool{}, ownRoot: tree.NewDir("", 0o755), compressed: compressedSize}}
}

// Entry applies one tar entry; body reads its content (h.Size bytes for a
// regular file).
func (l *LayerApply) Entry(h *tar.Header, body io.Reader) error {
	a := l.ap.a
	a.entries++
	if a.entries > a.lim.MaxEntries {
		return fmt.Errorf("layer %s: the image has more than %d entries (--max-entries): %w", l.ap.name, a.lim.MaxEntries, ErrLimit)
	}
	if err := l.ap.entry(h, body); err != nil {
		return fmt.Errorf("layer %s: %s: %w", l.ap.name, h.Name, err)
	}
	return nil
}

// End ends the layer and returns its own tree.
func (l *LayerApply) End() *tree.Node {
	l.ap.a.Root.Sort()
	l.ap.ownRoot.Sort()
	return l.ap.ownRoot
}

type apply struct {
	a       *Applier
	name    string
	created map[*tree.Node]bool // nodes this layer made (opaque keeps them)
	ownRoot *tree.Node          // the layer as it spells itself
	// size: the layer's file bytes so far, as its headers say; compressed:
	// its blob's size (0: unknown).
	size, compressed int64
}

const (
	whPrefix = ".wh."
	whOpaque = ".wh..wh..opq"
)

// splitName checks and splits a tar entry name into components ("" or "."
// alone is the root: no components).
func splitName(name string) ([]string, error) {
	if strings.HasPrefix(name, "/") {
		return nil, errors.New("absolute path in a layer")
	}
	if strings.ContainsRune(name, 0) {
		return nil, errors.New("NUL byte in a path")
	}
	var out []string
	for _, c := range strings.Split(name, "/") {
		switch c {
		case "", ".":
			continue
		case "..":
			return nil, errors.New(`path with ".." in a layer`)
		}
		if len(c) > 255 {
			return nil, errors.New("path component longer than 255 bytes")
		}
		out = append(out, c)
	}
	if len(out) > 1024 {
		return nil, errors.New("path deeper than 1024 components")
	}
	return out, nil
}

// resolveDir walks dir components from the root, following symlinks (as
// the kernel would when a runtime unpacks the layer) but never out of the
// root, and returns the directory. missing parents are created (0755) when
// create is set.
func (ap *apply) resolveDir(comps []string, create bool) (*tree.Node, error) {
	budget := 40 // symlinks followed, as the kernel's ELOOP limit
	return ap.walk(ap.a.Root, comps, create, &budget, 0)
}

func (ap *apply) walk(start *tree.Node, comps []string, create bool, budget *int, depth int) (*tree.Node, error) {
	cur := start
	for _, c := range comps {
		if c == "" || c == "." {
			continue
		}
		if c == ".." {
			if cur.Parent == nil {
				return nil, errors.New("a parent directory resolves outside the root (through a symlink)")
			}
			cur = cur.Parent
			continue
		}
		next := cur.Child(c)
		if next == nil {
			if !create {
				return nil, fmt.Errorf("%s: no such directory", c)
			}
			next = tree.NewDir(c, 0o755)
			insert(cur, next)
			ap.created[next] = true
			cur = next
			continue
		}
		if next.Inode().Mode&tree.TypeMask == tree.TypeLink {
			*budget--
			if *budget < 0 {
				return nil, errors.New("too many levels of symbolic links in a parent directory")
			}
			target := next.Inode().Target
			base := cur
			if strings.HasPrefix(target, "/") {
				// An absolute target is relative to the image's root;
				// a runtime would follow it on the host: refuse to guess
				// less safely than chroot does.
				base = ap.a.Root
			}
			resolved, err := ap.walk(base, strings.Split(target, "/"), false, budget, depth+1)
			if err != nil {
				return nil, fmt.Errorf("parent %s -> %s: %w", c, target, err)
			}
			cur = resolved
			continue
		}
		if !next.IsDir() {
			return nil, fmt.Errorf("parent %s is not a directory", c)
		}
		cur = next
	}
	if !cur.IsDir() {
		return nil, errors.New("parent is not a directory")
	}
	return cur, nil
}

// remove detaches n from its parent, keeping its inode alive in one of the
// hardlinks to it.
func (ap *apply) remove(n *tree.Node) {
	p := n.Parent
	for i, c := range p.Children {
		if c == n {
			p.Children = append(p.Children[:i], p.Children[i+1:]...)
			break
		}
	}
	n.Parent = nil
	ap.forget(n)
}

// forget updates the hardlink bookkeeping for a node (and, for a
// directory, everything under it) that left the tree.
func (ap *apply) forget(n *tree.Node) {
	a := ap.a
	if n.LinkTo != nil {
		ls := a.links[n.LinkTo]
		for i, l := range ls {
			if l == n {
				a.links[n.LinkTo] = append(ls[:i], ls[i+1:]...)
				break
			}
		}
		n.LinkTo.Nlink--
		return
	}
	if ls := a.links[n]; len(ls) > 0 {
		// The first link becomes the inode, the others point to it.
		heir := ls[0]
		name, parent := heir.Name, heir.Parent
		*heir = *n
		heir.Name, heir.Parent, heir.LinkTo, heir.Children = name, parent, nil, nil
		heir.Nlink = uint32(len(ls))
		for _, l := range ls[1:] {
			l.LinkTo = heir
		}
		delete(a.links, n)
		if len(ls) > 1 {
			a.links[heir] = ls[1:]
		}
		return
	}
	for _, c := range n.Children {
		ap.forget(c)
	}
}

func (ap *apply) entry(h *tar.Header, body io.Reader) error {
	comps, err := splitName(h.Name)
	if err != nil {
		return err
	}
	if h.Typeflag == tar.TypeXGlobalHeader {
		return nil
	}
	if len(comps) == 0 {
		if h.Typeflag != tar.TypeDir {
			return errors.New("the root is not a directory")
		}
		setMeta(ap.a.Root, h)
		ap.own(comps, h, nil)
		return nil
	}
	base := comps[len(comps)-1]
	parent, err := ap.resolveDir(comps[:len(comps)-1], true)
	if err != nil {
		return err
	}
	if strings.HasPrefix(base, whPrefix) {
		if base == whOpaque {
			for _, c := range append([]*tree.Node(nil), parent.Children...) {
				if !ap.created[c] {
					ap.remove(c)
				}
			}
			ap.own(comps, h, nil)
			return nil
		}
		target := strings.TrimPrefix(base, whPrefix)
		switch target {
		case "":
			return errors.New(`bare ".wh." whiteout names nothing`)
		case ".", "..":
			return errors.New("whiteout of the root or its parent")
		}
		if strings.HasPrefix(target, whPrefix) {
			return errors.New("whiteout of a whiteout name")
		}
		if old := parent.Child(target); old != nil {
			ap.remove(old)
		}
		ap.own(comps, h, nil)
		return nil
	}
	old := parent.Child(base)
	if h.Typeflag == tar.TypeDir && old != nil && old.LinkTo == nil && old.IsDir() {
		setMeta(old, h)
		ap.created[old] = true
		ap.own(comps, h, old)
		return nil
	}
	n := &tree.Node{Name: base, Nlink: 1}
	switch h.Typeflag {
	case tar.TypeDir:
		n.Mode = tree.TypeDir
	case tar.TypeReg, tar.TypeRegA:
		n.Mode = tree.TypeReg
		if err := ap.content(n, h, body); err != nil {
			return err
		}
	case tar.TypeSymlink:
		n.Mode = tree.TypeLink
		if h.Linkname == "" {
			return errors.New("symlink with an empty target")
		}
		n.Target, n.Size = h.Linkname, uint64(len(h.Linkname))
	case tar.TypeChar, tar.TypeBlock:
		n.Mode = tree.TypeChar
		if h.Typeflag == tar.TypeBlock {
			n.Mode = tree.TypeBlock
		}
		if h.Devmajor < 0 || h.Devmajor > 0xfff || h.Devminor < 0 || h.Devminor > 0xfffff {
			return fmt.Errorf("device number %d:%d out of range", h.Devmajor, h.Devminor)
		}
		n.Rdev = mkdev(uint32(h.Devmajor), uint32(h.Devminor))
	case tar.TypeFifo:
		n.Mode = tree.TypeFifo
	case tar.TypeLink:
		n, err := ap.hardlink(parent, base, old, h)
		if err != nil {
			return err
		}
		ap.own(comps, h, n)
		return nil
	default:
		return fmt.Errorf("unsupported tar entry type %q", h.Typeflag)
	}
	setMeta(n, h)
	if old != nil {
		ap.remove(old)
	}
	insert(parent, n)
	ap.created[n] = true
	ap.own(comps, h, n)
	return nil
}

func (ap *apply) hardlink(parent *tree.Node, base string, old *tree.Node, h *tar.Header) (*tree.Node, error) {
	tcomps, err := splitName(h.Linkname)
	if err != nil {
		return nil, fmt.Errorf("hardlink target %s: %w", h.Linkname, err)
	}
	if len(tcomps) == 0 {
		return nil, errors.New("hardlink to the root")
	}
	tdir, err := ap.resolveDir(tcomps[:len(tcomps)-1], false)
	if err != nil {
		return nil, fmt.Errorf("hardlink target %s: %w", h.Linkname, err)
	}
	t := tdir.Child(tcomps[len(tcomps)-1])
	if t == nil {
		return nil, fmt.Errorf("hardlink to %s, which does not exist", h.Linkname)
	}
	inode := t.Inode()
	if inode.IsDir() {
		return nil, fmt.Errorf("hardlink to the directory %s", h.Linkname)
	}
	if old == t || (old != nil && old.Inode() == inode) {
		return old, nil // already that inode
	}
	n := &tree.Node{Name: base, LinkTo: inode}
	if old != nil {
		ap.remove(old)
	}
	insert(parent, n)
	ap.created[n] = true
	inode.Nlink++
	ap.a.links[inode] = append(ap.a.links[inode], n)
	// The link's header applies to the inode, as when a runtime unpacks
	// it (link, then chown, chmod, set xattrs and times on the new name).
	inode.Mode = inode.Mode&tree.TypeMask | uint32(h.Mode)&0o7777
	inode.UID, inode.GID = uint32(h.Uid), uint32(h.Gid)
	inode.Mtime = tree.Timespec{Sec: h.ModTime.Unix(), Nsec: uint32(h.ModTime.Nanosecond())}
	for k, v := range h.PAXRecords {
		if name, ok := strings.CutPrefix(k, "SCHILY.xattr."); ok {
			inode.SetXattr(name, []byte(v))
		}
	}
	return n, nil
}

// content stores a regular file's content: inline up to InlineMax bytes.
func (ap *apply) content(n *tree.Node, h *tar.Header, body io.Reader) error {
	if h.Size < 0 {
		return errors.New("negative size")
	}
	ap.size += h.Size
	lim := ap.a.lim
	if ap.size > lim.MaxLayerBytes || ap.size < 0 {
		return fmt.Errorf("layer %s expands past %d bytes (--max-layer-bytes): %w", ap.name, lim.MaxLayerBytes, ErrLimit)
	}
	if ap.compressed > 0 && ap.size > lim.RatioAfter && ap.size/ap.compressed > lim.Ratio {
		return fmt.Errorf("layer %s expands past %d× its compressed size of %d bytes (--max-ratio): %w", ap.name, lim.Ratio, ap.compressed, ErrLimit)
	}
	n.Size = uint64(h.Size)
	switch {
	case h.Size == 0:
	case h.Size <= InlineMax:
		b := make([]byte, h.Size)
		if _, err := io.ReadFull(body, b); err != nil {
			return fmt.Errorf("reading content: %w", err)
		}
		n.Content = b
		if k, ok := ap.a.store.(InlineKeeper); ok {
			if err := k.KeepInline(b); err != nil {
				return fmt.Errorf("storing content: %w", err)
			}
		}
	default:
		cr := &countReader{r: body}
		var d [32]byte
		var err error
		if es, ok := ap.a.store.(EntryStore); ok {
			d, err = es.PutEntry(h, cr)
		} else {
			d, err = ap.a.store.Put(cr)
		}
		if err != nil {
			return fmt.Errorf("storing content: %w", err)
		}
		if cr.n != h.Size {
			return fmt.Errorf("content is %d bytes, its header says %d", cr.n, h.Size)
		}
		n.Digest = append([]byte(nil), d[:]...)
		n.Payload = payload(d)
	}
	return nil
}

type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

func payload(d [32]byte) string {
	const hexd = "0123456789abcdef"
	b := make([]byte, 0, 65)
	for i, x := range d {
		b = append(b, hexd[x>>4], hexd[x&15])
		if i == 0 {
			b = append(b, '/')
		}
	}
	return string(b)
}

// mkdev encodes a device number as the kernel's dev_t (new encoding).
func mkdev(major, minor uint32) uint32 {
	return (minor & 0xff) | (major&0xfff)<<8 | (minor&^0xff)<<12
}

// setMeta copies mode bits, owners, time and xattrs from the header
// (symlinks are always 0777).
func setMeta(n *tree.Node, h *tar.Header) {
	n.Mode = n.Mode&tree.TypeMask | uint32(h.Mode)&0o7777
	if n.Mode&tree.TypeMask == tree.TypeLink {
		n.Mode = tree.TypeLink | 0o777
	}
	n.UID, n.GID = uint32(h.Uid), uint32(h.Gid)
	n.Mtime = tree.Timespec{Sec: h.ModTime.Unix(), Nsec: uint32(h.ModTime.Nanosecond())}
	n.Xattrs = nil
	for k, v := range h.PAXRecords {
		if name, ok := strings.CutPrefix(k, "SCHILY.xattr."); ok {
			n.SetXattr(name, []byte(v))
		}
	}
}

// own records the entry in the layer's own tree, as the tar spells it:
// whiteouts as the empty files they are, a hardlink as a hardlink when its
// target is in this layer, else as a copy of the target's inode carrying
// the xattr user.mossfs.oci.hardlink = the target's path. merged is the
// node the entry made in the merged tree (nil for whiteouts and the root).
func (ap *apply) own(comps []string, h *tar.Header, merged *tree.Node) {
	if len(comps) == 0 {
		setMeta(ap.ownRoot, h)
		return
	}
	parent := ap.ownRoot
	for _, c := range comps[:len(comps)-1] {
		next := parent.Child(c)
		if next == nil || next.LinkTo != nil || !next.IsDir() {
			if next != nil {
				removeChild(parent, next)
			}
			next = tree.NewDir(c, 0o755)
			insert(parent, next)
		}
		parent = next
	}
	base := comps[len(comps)-1]
	old := parent.Child(base)
	if old != nil {
		if h.Typeflag == tar.TypeDir && old.LinkTo == nil && old.IsDir() {
			setMeta(old, h)
			return
		}
		removeChild(parent, old)
	}
	var n *tree.Node
	switch {
	case merged == nil: // a whiteout
		n = &tree.Node{Name: base, Mode: tree.TypeReg, Nlink: 1}
		setMeta(n, h)
	case h.Typeflag == tar.TypeLink:
		if t := ap.ownRoot.Lookup(strings.Join(mustSplit(h.Linkname), "/")); t != nil && !t.Inode().IsDir() {
			n = &tree.Node{Name: base, LinkTo: t.Inode()}
			t.Inode().Nlink++
		} else {
			c := *merged.Inode()
			c.Name, c.Parent, c.LinkTo, c.Children, c.Nlink = base, nil, nil, nil, 1
			c.Xattrs = append([]tree.Xattr(nil), c.Xattrs...)
			c.SetXattr("user.mossfs.oci.hardlink", []byte(h.Linkname))
			n = &c
		}
	default:
		c := *merged
		c.Name, c.Parent, c.Children, c.Nlink = base, nil, nil, 1
		n = &c
	}
	insert(parent, n)
}

func mustSplit(name string) []string {
	c, _ := splitName(name)
	return c
}

// insert adds c to p's children at its sorted place (Child needs them
// sorted).
func insert(p, c *tree.Node) {
	i, _ := slices.BinarySearchFunc(p.Children, c.Name, func(x *tree.Node, s string) int { return strings.Compare(x.Name, s) })
	c.Parent = p
	p.Children = slices.Insert(p.Children, i, c)
}

func removeChild(p, n *tree.Node) {
	for i, c := range p.Children {
		if c == n {
			p.Children = append(p.Children[:i], p.Children[i+1:]...)
			return
		}
	}
}
