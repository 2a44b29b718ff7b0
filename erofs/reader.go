package erofs

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"slices"
	"strings"

	"github.com/mossfs/mossfs/tree"
)

// Reader of composefs EROFS images.
//
// Every offset, length and count read from the image is checked against the
// image size before it is used, so a corrupted or hostile image gives an
// error, never a panic, an endless loop or an allocation larger than the
// image. Directory cycles are refused: Tree fails on a directory reached
// twice, and path lookups check that a subdirectory's ".." names the
// directory it was found in.

// ErrCorrupt is wrapped by every error about an image's content.
var ErrCorrupt = errors.New("corrupt composefs image")

// ErrExternal is returned when reading the content of a file whose data lives
// in the object store and the Image has no object directory to read it from.
var ErrExternal = errors.New("content is in the object store")

const (
	// readMaxSymlinkLen is PATH_MAX - 1, as libcomposefs and the kernel enforce.
	readMaxSymlinkLen = 4095
	// readMaxNameLen is EROFS_NAME_LEN.
	readMaxNameLen = 255
	// maxDepth bounds directory nesting in Tree (PATH_MAX / 2: every level
	// costs at least one name byte and one slash).
	maxDepth = 2048
	// maxSymlinkFollows is the kernel's limit on symlinks in one lookup.
	maxSymlinkFollows = 40
)

// Image is an open composefs EROFS image. It is safe for concurrent use.
type Image struct {
	src        *source
	name       string // for error messages; "" when unknown
	hdr        Header
	sb         Superblock
	metaStart  int64 // byte offset of nid 0
	xattrStart int64 // byte offset shared xattr ids count from
	objects    fs.FS
}

// Inode is one inode of the image as an overlayfs mount of it shows it.
type Inode struct {
	Nid   uint64
	Ino   uint32 // i_ino
	Mode  uint32 // st_mode with the type bits
	UID   uint32
	GID   uint32
	Nlink uint32
	Size  uint64
	Mtime tree.Timespec
	Rdev  uint32 // char and block devices only
	// Xattrs in the overlay view, sorted by name: trusted.overlay.overlay.X
	// shown as trusted.overlay.X, other trusted.overlay.* hidden.
	Xattrs []tree.Xattr
	// Target is a symlink's target.
	Target string
	// Payload is the object path of an external regular file (the
	// trusted.overlay.redirect value without its leading "/"), Digest its
	// fs-verity digest from trusted.overlay.metacopy (nil: none).
	Payload string
	Digest  []byte
	// HasInline reports that a regular file's content is stored in the image
	// (flat layout, size > 0): ReadAt reads it.
	HasInline bool

	layout    uint8
	blkaddr   uint32 // i_u for flat layouts
	tailOff   int64  // byte offset of the inline tail
	xattrOff  int64  // byte offset of the xattr area
	xattrSize int    // its size
	// rawXattrs in on-disk order (inline, then shared), names unprefixed
	// and unescaped: exactly what the image stores.
	rawXattrs []tree.Xattr
}

// DirEntry is one entry of a directory in the overlay view (no ".", "..",
// or whiteout stubs). (The agreed name was Dirent; format.go already uses it
// for the on-disk record.)
type DirEntry struct {
	Name string
	Nid  uint64
	// Type holds the st_mode file type bits (tree.TypeDir, tree.TypeReg, …)
	// from the directory entry; 0 if the entry's type is unknown.
	Type uint32
}

// Open reads and validates the composefs header and EROFS superblock of the
// image in r. Inodes and directories are read lazily.
func Open(r io.ReaderAt) (*Image, error) {
	return open(r, "", nil)
}

// OpenWithObjects is Open with an object directory (the store's objects/ dir,
// where payload "ab/cdef…" lives at "ab/cdef…"): the fs.FS view then reads
// the content of external files from it.
func OpenWithObjects(r io.ReaderAt, objects fs.FS) (*Image, error) {
	return open(r, "", objects)
}

// OpenBytes is Open on an image held in memory (read or memory-mapped):
// records are read in place, without copies or a block cache. b must not
// change while the Image is used.
func OpenBytes(b []byte, objects fs.FS) (*Image, error) {
	img, err := open(bytes.NewReader(b), "", objects)
	if err != nil {
		return nil, err
	}
	img.src = &source{size: int64(len(b)), data: b}
	return img, nil
}

// OpenFile opens the image file at path (for tools and tests); the returned
// close function closes the file.
func OpenFile(path string, objects fs.FS) (*Image, func() error, error) {
	f, err := osOpen(path)
	if err != nil {
		return nil, nil, err
	}
	img, err := open(f, path, objects)
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return img, f.Close, nil
}

func open(r io.ReaderAt, name string, objects fs.FS) (*Image, error) {
	img := &Image{name: name, objects: objects}
	size, err := readerSize(r)
	if err != nil {
		return nil, img.errorf("image size: %w", err)
	}
	var head [SuperblockOffset + SuperblockSize]byte
	if size >= 0 && size < BlockSize {
		return nil, img.corruptf("image is %d bytes, smaller than one %d-byte block", size, BlockSize)
	}
	if _, err := r.ReadAt(head[:], 0); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, img.corruptf("image is shorter than its header and superblock")
		}
		return nil, img.errorf("reading header: %w", err)
	}
	h := &img.hdr
	h.Magic = le.Uint32(head[0:])
	h.Version = le.Uint32(head[4:])
	h.Flags = le.Uint32(head[8:])
	h.ComposefsVersion = le.Uint32(head[12:])
	if h.Magic != ComposefsMagic {
		return nil, img.corruptf("bad composefs magic %#08x (want %#08x): not a composefs image", h.Magic, uint32(ComposefsMagic))
	}
	if h.Version != ComposefsHeaderVersion {
		return nil, img.corruptf("unsupported composefs header version %d (want %d)", h.Version, ComposefsHeaderVersion)
	}
	s := &img.sb
	b := head[SuperblockOffset:]
	s.Magic = le.Uint32(b[0:])
	s.Checksum = le.Uint32(b[4:])
	s.FeatureCompat = le.Uint32(b[8:])
	s.BlkSzBits = b[12]
	s.SbExtSlots = b[13]
	s.RootNid = le.Uint16(b[14:])
	s.Inos = le.Uint64(b[16:])
	s.BuildTime = le.Uint64(b[24:])
	s.BuildTimeNsec = le.Uint32(b[32:])
	s.Blocks = le.Uint32(b[36:])
	s.MetaBlkAddr = le.Uint32(b[40:])
	s.XattrBlkAddr = le.Uint32(b[44:])
	s.FeatureIncompat = le.Uint32(b[80:])
	if s.Magic != SuperMagic {
		return nil, img.corruptf("bad EROFS superblock magic %#08x (want %#08x)", s.Magic, uint32(SuperMagic))
	}
	if s.BlkSzBits != BlockBits {
		return nil, img.corruptf("EROFS block size 2^%d, composefs images use 2^%d", s.BlkSzBits, BlockBits)
	}
	// Chunk-based files are the only incompatible feature composefs uses
	// (and it does not even set the bit); compression, extra devices,
	// long xattr prefixes and the rest are not composefs.
	const incompatChunkedFile = 0x4
	if s.FeatureIncompat&^incompatChunkedFile != 0 {
		return nil, img.corruptf("unsupported EROFS incompatible features %#x", s.FeatureIncompat)
	}
	if size < 0 {
		// No way to ask the reader its size: trust the superblock, and
		// check that its last byte exists.
		size = int64(s.Blocks) * BlockSize
		if size < BlockSize {
			return nil, img.corruptf("superblock says %d blocks", s.Blocks)
		}
		var one [1]byte
		if _, err := r.ReadAt(one[:], size-1); err != nil {
			return nil, img.corruptf("superblock says %d blocks but the image is shorter", s.Blocks)
		}
	}
	if int64(s.Blocks)*BlockSize > size {
		return nil, img.corruptf("superblock says %d blocks (%d bytes) but the image has %d bytes: truncated", s.Blocks, int64(s.Blocks)*BlockSize, size)
	}
	img.metaStart = int64(s.MetaBlkAddr) * BlockSize
	img.xattrStart = int64(s.XattrBlkAddr) * BlockSize
	if img.metaStart >= size || img.xattrStart >= size {
		return nil, img.corruptf("metadata block %d or shared xattr block %d beyond the image end", s.MetaBlkAddr, s.XattrBlkAddr)
	}
	img.src = newSource(r, size)
	if _, err := img.base(img.RootNid()); err != nil {
		return nil, err
	}
	return img, nil
}

// RootNid returns the nid of the root directory.
func (img *Image) RootNid() uint64 { return uint64(img.sb.RootNid) }

// Version returns the header's composefs_version (0 or 1).
func (img *Image) Version() int { return int(img.hdr.ComposefsVersion) }

// HasACL reports the header's HAS_ACL flag: some inode has a POSIX ACL.
func (img *Image) HasACL() bool { return img.hdr.Flags&ComposefsFlagHasACL != 0 }

// Header returns the composefs header.
func (img *Image) Header() Header { return img.hdr }

// Superblock returns the EROFS superblock (the fields this reader decodes).
func (img *Image) Superblock() Superblock { return img.sb }

// Size returns the image size in bytes.
func (img *Image) Size() int64 { return img.src.size }

var le = binary.LittleEndian

func (img *Image) corruptf(format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	if img.name != "" {
		return fmt.Errorf("%s: %w: %s", img.name, ErrCorrupt, msg)
	}
	return fmt.Errorf("%w: %s", ErrCorrupt, msg)
}

func (img *Image) errorf(format string, args ...any) error {
	err := fmt.Errorf(format, args...)
	if img.name != "" {
		return fmt.Errorf("%s: %w", img.name, err)
	}
	return err
}

// readerSize asks r for its size (Size or Stat); -1 if it cannot tell.
func readerSize(r io.ReaderAt) (int64, error) {
	switch v := r.(type) {
	case interface{ Size() int64 }:
		return v.Size(), nil
	case interface{ Stat() (fs.FileInfo, error) }:
		fi, err := v.Stat()
		if err != nil {
			return 0, err
		}
		if fi.Mode().IsRegular() {
			return fi.Size(), nil
		}
	}
	return -1, nil
}

// base decodes the fixed part of an inode: the record, where its xattrs and
// inline tail are, but not the xattrs themselves.
func (img *Image) base(nid uint64) (*Inode, error) {
	ino := new(Inode)
	if err := img.decodeBase(nid, ino); err != nil {
		return nil, err
	}
	return ino, nil
}

// decodeBase is base into *ino, which it overwrites.
func (img *Image) decodeBase(nid uint64, ino *Inode) error {
	size := img.src.size
	if nid > uint64(size)/SlotSize {
		return img.corruptf("nid %d beyond the image end", nid)
	}
	off := img.metaStart + int64(nid)*SlotSize
	if off+InodeCompactSize > size {
		return img.corruptf("inode %d beyond the image end", nid)
	}
	rec, err := img.src.read(off, InodeCompactSize)
	if err != nil {
		return err
	}
	format := le.Uint16(rec[0:])
	*ino = Inode{Nid: nid}
	ino.layout = uint8(format>>1) & 0x7
	var icount uint16
	var isize int64
	if format&InodeFormatExtended == 0 {
		isize = InodeCompactSize
		icount = le.Uint16(rec[2:])
		ino.Mode = uint32(le.Uint16(rec[4:]))
		ino.Nlink = uint32(le.Uint16(rec[6:]))
		ino.Size = uint64(le.Uint32(rec[8:]))
		ino.blkaddr = le.Uint32(rec[16:])
		ino.Ino = le.Uint32(rec[20:])
		ino.UID = uint32(le.Uint16(rec[24:]))
		ino.GID = uint32(le.Uint16(rec[26:]))
		// Compact inodes carry no mtime: it is the superblock build time.
		ino.Mtime = tree.Timespec{Sec: int64(img.sb.BuildTime), Nsec: img.sb.BuildTimeNsec}
	} else {
		isize = InodeExtendedSize
		if off+InodeExtendedSize > size {
			return img.corruptf("inode %d beyond the image end", nid)
		}
		rec, err = img.src.read(off, InodeExtendedSize)
		if err != nil {
			return err
		}
		icount = le.Uint16(rec[2:])
		ino.Mode = uint32(le.Uint16(rec[4:]))
		ino.Size = le.Uint64(rec[8:])
		ino.blkaddr = le.Uint32(rec[16:])
		ino.Ino = le.Uint32(rec[20:])
		ino.UID = le.Uint32(rec[24:])
		ino.GID = le.Uint32(rec[28:])
		ino.Mtime = tree.Timespec{Sec: int64(le.Uint64(rec[32:])), Nsec: le.Uint32(rec[40:])}
		ino.Nlink = le.Uint32(rec[44:])
	}
	switch ino.Mode & tree.TypeMask {
	case tree.TypeReg, tree.TypeDir, tree.TypeLink, tree.TypeChar, tree.TypeBlock, tree.TypeFifo, tree.TypeSock:
	default:
		return img.corruptf("inode %d: mode %#o has no valid file type", nid, ino.Mode)
	}
	switch ino.layout {
	case LayoutFlatPlain, LayoutFlatInline, LayoutChunkBased:
	default:
		return img.corruptf("inode %d: unsupported data layout %d", nid, ino.layout)
	}
	if t := ino.Mode & tree.TypeMask; t == tree.TypeChar || t == tree.TypeBlock {
		ino.Rdev = ino.blkaddr
	}
	ino.xattrOff = off + isize
	ino.xattrSize = XattrAreaSize(icount)
	ino.tailOff = ino.xattrOff + int64(ino.xattrSize)
	if ino.tailOff > size {
		return img.corruptf("inode %d: xattr area beyond the image end", nid)
	}
	return nil
}

// Inode returns the inode with the given nid in the overlay view, with its
// xattrs, symlink target, payload and digest decoded.
func (img *Image) Inode(nid uint64) (*Inode, error) {
	ino, err := img.base(nid)
	if err != nil {
		return nil, err
	}
	if err := img.decodeXattrs(ino); err != nil {
		return nil, err
	}
	for _, x := range ino.rawXattrs {
		switch {
		case x.Name == XattrRedirect:
			if ino.Mode&tree.TypeMask == tree.TypeReg {
				ino.Payload = payloadOfRedirect(x.Value)
			}
		case x.Name == XattrMetacopy:
			if ino.Mode&tree.TypeMask == tree.TypeReg && len(x.Value) == MetacopySize {
				ino.Digest = slices.Clone(x.Value[MetacopyHeaderSize:])
			}
		case strings.HasPrefix(x.Name, XattrOverlayEscPrefix):
			setXattr(&ino.Xattrs, "trusted.overlay."+x.Name[len(XattrOverlayEscPrefix):], x.Value)
		case strings.HasPrefix(x.Name, XattrOverlayPrefix):
			// overlayfs's own xattrs are invisible through the mount.
		default:
			setXattr(&ino.Xattrs, x.Name, x.Value)
		}
	}
	switch ino.Mode & tree.TypeMask {
	case tree.TypeLink:
		t, err := img.symlinkTarget(ino)
		if err != nil {
			return nil, err
		}
		ino.Target = t
	case tree.TypeReg:
		ino.HasInline = ino.Size > 0 && ino.layout != LayoutChunkBased
	}
	return ino, nil
}

// RawXattrs returns the xattrs of an inode exactly as the image stores them
// (full names, escaped, overlay xattrs included), in on-disk order: inline
// entries, then shared ones.
func (img *Image) RawXattrs(nid uint64) ([]tree.Xattr, error) {
	ino, err := img.base(nid)
	if err != nil {
		return nil, err
	}
	if err := img.decodeXattrs(ino); err != nil {
		return nil, err
	}
	return ino.rawXattrs, nil
}

// payloadOfRedirect turns a redirect value into a payload as libcomposefs
// does: strip one leading "/" (unless that is all), stop at a NUL.
func payloadOfRedirect(v []byte) string { return string(redirectPayload(v)) }

// redirectPayload is payloadOfRedirect in place.
func redirectPayload(v []byte) []byte {
	if len(v) > 1 && v[0] == '/' {
		v = v[1:]
	}
	if i := slices.Index(v, 0); i >= 0 {
		v = v[:i]
	}
	return v
}

func setXattr(xs *[]tree.Xattr, name string, value []byte) {
	n := tree.Node{Xattrs: *xs}
	n.SetXattr(name, value)
	*xs = n.Xattrs
}

// decodeXattrs fills ino.rawXattrs.
func (img *Image) decodeXattrs(ino *Inode) error {
	var xs []tree.Xattr
	err := img.walkXattrs(ino, func(prefix string, name, value []byte) {
		xs = append(xs, tree.Xattr{Name: prefix + string(name), Value: slices.Clone(value)})
	})
	if err != nil {
		return err
	}
	ino.rawXattrs = xs
	return nil
}

// walkXattrs checks an inode's xattr area and calls fn for each entry in
// on-disk order (inline entries, then shared ones) with the name's prefix,
// the rest of the name and the value, all in place: fn must copy what it
// keeps.
func (img *Image) walkXattrs(ino *Inode, fn func(prefix string, name, value []byte)) error {
	if ino.xattrSize == 0 {
		return nil
	}
	area, err := img.src.read(ino.xattrOff, ino.xattrSize)
	if err != nil {
		return err
	}
	shared := int(area[4])
	pos := XattrHeaderSize + 4*shared
	if pos > len(area) {
		return img.corruptf("inode %d: %d shared xattr ids do not fit its %d-byte xattr area", ino.Nid, shared, len(area))
	}
	for p := pos; p < len(area); {
		if p+XattrEntrySize > len(area) {
			return img.corruptf("inode %d: xattr entry header beyond its xattr area", ino.Nid)
		}
		nameLen, index, valueLen := int(area[p]), area[p+1], int(le.Uint16(area[p+2:]))
		end := p + XattrEntrySize + nameLen + valueLen
		if end > len(area) {
			return img.corruptf("inode %d: xattr entry (%d-byte name, %d-byte value) beyond its xattr area", ino.Nid, nameLen, valueLen)
		}
		if err := img.xattrEntry(ino.Nid, index, area[p+XattrEntrySize:end], nameLen, fn); err != nil {
			return err
		}
		p = (end + 3) &^ 3
	}
	for i := range shared {
		id := le.Uint32(area[XattrHeaderSize+4*i:])
		off := img.xattrStart + int64(id)*4
		if off+XattrEntrySize > img.src.size {
			return img.corruptf("inode %d: shared xattr id %d beyond the image end", ino.Nid, id)
		}
		h, err := img.src.read(off, XattrEntrySize)
		if err != nil {
			return err
		}
		nameLen, index, valueLen := int(h[0]), h[1], int(le.Uint16(h[2:]))
		n := nameLen + valueLen
		if off+XattrEntrySize+int64(n) > img.src.size {
			return img.corruptf("inode %d: shared xattr id %d beyond the image end", ino.Nid, id)
		}
		body, err := img.src.read(off+XattrEntrySize, n)
		if err != nil {
			return err
		}
		if err := img.xattrEntry(ino.Nid, index, body, nameLen, fn); err != nil {
			return err
		}
	}
	return nil
}

func (img *Image) xattrEntry(nid uint64, index uint8, body []byte, nameLen int, fn func(prefix string, name, value []byte)) error {
	prefix, ok := XattrPrefix(index)
	if !ok {
		return img.corruptf("inode %d: unknown xattr name index %d", nid, index)
	}
	fn(prefix, body[:nameLen], body[nameLen:])
	return nil
}

// Attr is what stat shows of an inode, and where a regular file's content
// is: Inode without xattrs, symlink target, payload and digest.
type Attr struct {
	Nid   uint64
	Mode  uint32 // st_mode with the type bits
	UID   uint32
	GID   uint32
	Nlink uint32
	Size  uint64
	Mtime tree.Timespec
	Rdev  uint32
	// HasInline is Inode.HasInline; HasPayload reports a regular file whose
	// Inode.Payload is not empty.
	HasInline  bool
	HasPayload bool
}

// Attr returns what stat shows of inode nid. It checks the inode as Inode
// does (its record, xattr area and symlink target) and fails where Inode
// fails, but decodes in place and allocates nothing: it is for listing
// many inodes (a FUSE READDIRPLUS).
func (img *Image) Attr(nid uint64) (Attr, error) {
	var ino Inode
	if err := img.decodeBase(nid, &ino); err != nil {
		return Attr{}, err
	}
	reg := ino.Mode&tree.TypeMask == tree.TypeReg
	payload := false
	err := img.walkXattrs(&ino, func(prefix string, name, value []byte) {
		if reg && isName(XattrRedirect, prefix, name) {
			// The last redirect counts, as in Inode.
			payload = len(redirectPayload(value)) > 0
		}
	})
	if err != nil {
		return Attr{}, err
	}
	a := Attr{
		Nid: ino.Nid, Mode: ino.Mode, UID: ino.UID, GID: ino.GID, Nlink: ino.Nlink,
		Size: ino.Size, Mtime: ino.Mtime, Rdev: ino.Rdev, HasPayload: payload,
	}
	switch ino.Mode & tree.TypeMask {
	case tree.TypeLink:
		// What symlinkTarget checks; the target itself is not read.
		if ino.Size > readMaxSymlinkLen {
			return Attr{}, img.corruptf("inode %d: symlink target of %d bytes (max %d)", ino.Nid, ino.Size, readMaxSymlinkLen)
		}
		if _, _, err := img.dataRange(&ino); err != nil {
			return Attr{}, err
		}
	case tree.TypeReg:
		a.HasInline = ino.Size > 0 && ino.layout != LayoutChunkBased
	}
	return a, nil
}

// isName reports whether prefix+name is full, without building the string.
func isName(full, prefix string, name []byte) bool {
	return len(full) == len(prefix)+len(name) && full[:len(prefix)] == prefix && full[len(prefix):] == string(name)
}

// dataRange tells where byte range [0, ino.Size) of a flat inode lives: full
// blocks from blkaddr, then (FLAT_INLINE) the tail right after the xattrs.
// It checks that everything lies inside the image.
func (img *Image) dataRange(ino *Inode) (blocksLen int64, tailLen int64, err error) {
	if ino.layout == LayoutChunkBased {
		return 0, 0, img.corruptf("inode %d: chunk-based inode has no inline data", ino.Nid)
	}
	if ino.Size > uint64(img.src.size) {
		return 0, 0, img.corruptf("inode %d: size %d larger than the image", ino.Nid, ino.Size)
	}
	size := int64(ino.Size)
	if ino.layout == LayoutFlatInline && size > 0 {
		nblocks := (size + BlockSize - 1) / BlockSize
		blocksLen = (nblocks - 1) * BlockSize
		tailLen = size - blocksLen
		// The kernel refuses a tail that crosses a block boundary.
		if ino.tailOff%BlockSize+tailLen > BlockSize {
			return 0, 0, img.corruptf("inode %d: %d-byte inline tail crosses a block boundary", ino.Nid, tailLen)
		}
		if ino.tailOff+tailLen > img.src.size {
			return 0, 0, img.corruptf("inode %d: inline tail beyond the image end", ino.Nid)
		}
	} else {
		blocksLen = size
	}
	if blocksLen > 0 {
		start := int64(ino.blkaddr) * BlockSize
		if start+blocksLen > img.src.size {
			return 0, 0, img.corruptf("inode %d: data blocks %d..%d beyond the image end", ino.Nid, ino.blkaddr, (start+blocksLen-1)/BlockSize)
		}
	}
	return blocksLen, tailLen, nil
}

// ReadAt reads the content stored in the image for a flat inode (inline
// regular files, symlink targets, directory blocks) at off. External files
// (chunk-based) give an error wrapping ErrExternal.
func (img *Image) ReadAt(nid uint64, p []byte, off int64) (int, error) {
	ino, err := img.base(nid)
	if err != nil {
		return 0, err
	}
	return img.readAt(ino, p, off)
}

func (img *Image) readAt(ino *Inode, p []byte, off int64) (int, error) {
	if ino.layout == LayoutChunkBased {
		return 0, fmt.Errorf("inode %d: %w", ino.Nid, ErrExternal)
	}
	if off < 0 {
		return 0, fmt.Errorf("inode %d: negative offset %d", ino.Nid, off)
	}
	blocksLen, tailLen, err := img.dataRange(ino)
	if err != nil {
		return 0, err
	}
	size := blocksLen + tailLen
	if off >= size {
		return 0, io.EOF
	}
	n := 0
	for n < len(p) && off < size {
		var src int64
		var avail int64
		if off < blocksLen {
			src = int64(ino.blkaddr)*BlockSize + off
			avail = blocksLen - off
		} else {
			src = ino.tailOff + (off - blocksLen)
			avail = size - off
		}
		// Stay within one block per source read.
		if room := BlockSize - src%BlockSize; avail > room {
			avail = room
		}
		if avail > int64(len(p)-n) {
			avail = int64(len(p) - n)
		}
		b, err := img.src.read(src, int(avail))
		if err != nil {
			return n, err
		}
		copy(p[n:], b)
		n += int(avail)
		off += avail
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// content reads the whole flat content of an inode (bounded by the image size).
func (img *Image) content(ino *Inode) ([]byte, error) {
	blocksLen, tailLen, err := img.dataRange(ino)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, blocksLen+tailLen)
	if len(buf) == 0 {
		return buf, nil
	}
	if _, err := img.readAt(ino, buf, 0); err != nil && !(errors.Is(err, io.EOF)) {
		return nil, err
	}
	return buf, nil
}

func (img *Image) symlinkTarget(ino *Inode) (string, error) {
	if ino.Size > readMaxSymlinkLen {
		return "", img.corruptf("inode %d: symlink target of %d bytes (max %d)", ino.Nid, ino.Size, readMaxSymlinkLen)
	}
	b, err := img.content(ino)
	if err != nil {
		return "", err
	}
	return string(b), nil
}

// rawDirent is one directory record as stored.
type rawDirent struct {
	name  string
	nid   uint64
	ftype uint8
}

// readDirRaw decodes all entries of a directory inode, "." and ".."
// included, in on-disk order.
func (img *Image) readDirRaw(ino *Inode) ([]rawDirent, error) {
	var out []rawDirent
	err := img.walkDir(ino, func(name []byte, nid uint64, ftype uint8) {
		out = append(out, rawDirent{name: string(name), nid: nid, ftype: ftype})
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// walkDir checks a directory inode's blocks and calls fn for each entry,
// "." and ".." included, in on-disk order, with its name in place (fn must
// copy what it keeps).
func (img *Image) walkDir(ino *Inode, fn func(name []byte, nid uint64, ftype uint8)) error {
	if ino.Mode&tree.TypeMask != tree.TypeDir {
		return fmt.Errorf("inode %d: %w", ino.Nid, errNotDir)
	}
	blocksLen, tailLen, err := img.dataRange(ino)
	if err != nil {
		return err
	}
	for b := int64(0); b < blocksLen; b += BlockSize {
		n := min(BlockSize, blocksLen-b)
		blk, err := img.src.read(int64(ino.blkaddr)*BlockSize+b, int(n))
		if err != nil {
			return err
		}
		if err := img.walkDirBlock(ino.Nid, blk, fn); err != nil {
			return err
		}
	}
	if tailLen > 0 {
		blk, err := img.src.read(ino.tailOff, int(tailLen))
		if err != nil {
			return err
		}
		if err := img.walkDirBlock(ino.Nid, blk, fn); err != nil {
			return err
		}
	}
	return nil
}

var errNotDir = errors.New("not a directory")

// dirBlock is one directory block: all records first, then the names; a
// name runs to the next record's nameoff, the last one to a NUL or the block
// end.
type dirBlock struct {
	blk []byte
	n   int
}

func (img *Image) dirBlock(nid uint64, blk []byte) (dirBlock, error) {
	if len(blk) < DirentSize {
		return dirBlock{}, img.corruptf("directory %d: %d-byte block cannot hold a dirent", nid, len(blk))
	}
	first := int(le.Uint16(blk[8:]))
	if first < DirentSize || first%DirentSize != 0 || first > len(blk) {
		return dirBlock{}, img.corruptf("directory %d: bad first name offset %d in a %d-byte block", nid, first, len(blk))
	}
	return dirBlock{blk: blk, n: first / DirentSize}, nil
}

// entry decodes record i, checking its name.
func (d dirBlock) entry(img *Image, nid uint64, i int) (name []byte, child uint64, ftype uint8, err error) {
	r := d.blk[i*DirentSize:]
	start := int(le.Uint16(r[8:]))
	end := len(d.blk)
	if i+1 < d.n {
		end = int(le.Uint16(d.blk[(i+1)*DirentSize+8:]))
	}
	if start < d.n*DirentSize || end > len(d.blk) || start >= end {
		return nil, 0, 0, img.corruptf("directory %d: bad name offsets %d..%d in dirent %d", nid, start, end, i)
	}
	name = d.blk[start:end]
	if i+1 == d.n {
		if z := bytes.IndexByte(name, 0); z >= 0 {
			name = name[:z]
		}
	}
	if len(name) == 0 || len(name) > readMaxNameLen || bytes.IndexByte(name, '/') >= 0 || bytes.IndexByte(name, 0) >= 0 {
		return nil, 0, 0, img.corruptf("directory %d: invalid entry name %q", nid, name)
	}
	return name, le.Uint64(r[0:]), r[10], nil
}

// walkDirBlock calls fn for each entry of one directory block.
func (img *Image) walkDirBlock(nid uint64, blk []byte, fn func(name []byte, nid uint64, ftype uint8)) error {
	d, err := img.dirBlock(nid, blk)
	if err != nil {
		return err
	}
	for i := range d.n {
		name, child, ftype, err := d.entry(img, nid, i)
		if err != nil {
			return err
		}
		fn(name, child, ftype)
	}
	return nil
}

// ftypeMode converts an EROFS dirent file type to st_mode type bits.
func ftypeMode(t uint8) uint32 {
	switch t {
	case FileTypeReg:
		return tree.TypeReg
	case FileTypeDir:
		return tree.TypeDir
	case FileTypeChr:
		return tree.TypeChar
	case FileTypeBlk:
		return tree.TypeBlock
	case FileTypeFifo:
		return tree.TypeFifo
	case FileTypeSock:
		return tree.TypeSock
	case FileTypeSymlink:
		return tree.TypeLink
	}
	return 0
}

// isWhiteoutStub reports a real overlay whiteout (char device 0:0): the root
// stubs composefs adds, hidden by overlayfs and skipped by libcomposefs.
func isWhiteoutStub(ino *Inode) bool {
	return ino.Mode&tree.TypeMask == tree.TypeChar && ino.Rdev == 0
}

// ReadDirNid lists a directory in the overlay view: no ".", "..", nor
// whiteout stubs; entries in byte order of their names. (The agreed name was
// ReadDir(nid), which fs.ReadDirFS's ReadDir(name) already takes.)
func (img *Image) ReadDirNid(nid uint64) ([]DirEntry, error) {
	var ino Inode
	if err := img.decodeBase(nid, &ino); err != nil {
		return nil, err
	}
	// Two passes over the blocks, in place: the first counts the entries
	// and their names' bytes, the second fills one slice of entries whose
	// names share one string (two allocations a directory, not one per
	// entry).
	count, nameBytes := 0, 0
	err := img.walkDir(&ino, func(name []byte, _ uint64, _ uint8) {
		count++
		nameBytes += len(name)
	})
	if err != nil {
		return nil, err
	}
	var names strings.Builder
	names.Grow(nameBytes)
	type span struct{ from, to int }
	out := make([]DirEntry, 0, count)
	spans := make([]span, 0, count)
	var ferr error
	err = img.walkDir(&ino, func(name []byte, child uint64, ftype uint8) {
		if ferr != nil || string(name) == "." || string(name) == ".." {
			return
		}
		if ftype == FileTypeChr {
			var c Inode
			if err := img.decodeBase(child, &c); err != nil {
				ferr = err
				return
			}
			if isWhiteoutStub(&c) {
				return
			}
		}
		from := names.Len()
		names.Write(name)
		spans = append(spans, span{from, names.Len()})
		out = append(out, DirEntry{Nid: child, Type: ftypeMode(ftype)})
	})
	if err == nil {
		err = ferr
	}
	if err != nil {
		return nil, err
	}
	all := names.String()
	for i, sp := range spans {
		out[i].Name = all[sp.from:sp.to]
	}
	if !slices.IsSortedFunc(out, func(a, b DirEntry) int { return strings.Compare(a.Name, b.Name) }) {
		slices.SortFunc(out, func(a, b DirEntry) int { return strings.Compare(a.Name, b.Name) })
	}
	return out, nil
}

// Lookup finds name in directory nid (overlay view: whiteout stubs, "." and
// ".." do not exist). A subdirectory must name dir as its "..", which rules
// out directory cycles and hardlinked directories. It returns fs.ErrNotExist
// (wrapped) when there is no such entry.
func (img *Image) Lookup(dir uint64, name string) (uint64, error) {
	ino, err := img.base(dir)
	if err != nil {
		return 0, err
	}
	c, err := img.lookup(ino, name)
	if err != nil {
		return 0, err
	}
	return c.Nid, nil
}

func (img *Image) lookup(dir *Inode, name string) (*Inode, error) {
	if name == "." || name == ".." || name == "" {
		return nil, fmt.Errorf("lookup %q: %w", name, fs.ErrNotExist)
	}
	nid, ok, err := img.findEntry(dir, name)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("lookup %q: %w", name, fs.ErrNotExist)
	}
	c, err := img.base(nid)
	if err != nil {
		return nil, err
	}
	if isWhiteoutStub(c) {
		return nil, fmt.Errorf("lookup %q: %w", name, fs.ErrNotExist)
	}
	if c.Mode&tree.TypeMask == tree.TypeDir {
		// With the root and the directory itself excluded, a cycle can only
		// be entered from outside, through a directory that then has two
		// parents: its ".." rejects one of them.
		if c.Nid == dir.Nid || c.Nid == img.RootNid() {
			return nil, img.corruptf("directory %d (%q in directory %d) is its own ancestor: directory cycle", c.Nid, name, dir.Nid)
		}
		up, ok, err := img.findEntry(c, "..")
		if err != nil {
			return nil, err
		}
		if !ok || up != dir.Nid {
			return nil, img.corruptf("directory %d (%q in directory %d) has \"..\" pointing elsewhere: directory cycle or hardlinked directory", c.Nid, name, dir.Nid)
		}
	}
	return c, nil
}

// findEntry looks name up in a directory. Directory blocks are sorted (the
// kernel relies on it too): find the last block whose first name is <= name,
// then binary-search inside it.
func (img *Image) findEntry(dir *Inode, name string) (uint64, bool, error) {
	if dir.Mode&tree.TypeMask != tree.TypeDir {
		return 0, false, fmt.Errorf("inode %d: %w", dir.Nid, errNotDir)
	}
	blocksLen, tailLen, err := img.dataRange(dir)
	if err != nil {
		return 0, false, err
	}
	nblocks := blocksLen / BlockSize
	if tailLen > 0 {
		nblocks++
	}
	block := func(i int64) (dirBlock, error) {
		var blk []byte
		var err error
		if i*BlockSize < blocksLen {
			blk, err = img.src.read(int64(dir.blkaddr)*BlockSize+i*BlockSize, int(min(BlockSize, blocksLen-i*BlockSize)))
		} else {
			blk, err = img.src.read(dir.tailOff, int(tailLen))
		}
		if err != nil {
			return dirBlock{}, err
		}
		return img.dirBlock(dir.Nid, blk)
	}
	key := []byte(name)
	lo, hi := int64(0), nblocks // find the first block whose first name > name
	for lo < hi {
		mid := (lo + hi) / 2
		d, err := block(mid)
		if err != nil {
			return 0, false, err
		}
		first, _, _, err := d.entry(img, dir.Nid, 0)
		if err != nil {
			return 0, false, err
		}
		if bytes.Compare(first, key) <= 0 {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	if lo == 0 {
		return 0, false, nil
	}
	d, err := block(lo - 1)
	if err != nil {
		return 0, false, err
	}
	l, h := 0, d.n
	for l < h {
		m := (l + h) / 2
		ename, child, _, err := d.entry(img, dir.Nid, m)
		if err != nil {
			return 0, false, err
		}
		switch c := bytes.Compare(ename, key); {
		case c == 0:
			return child, true, nil
		case c < 0:
			l = m + 1
		default:
			h = m
		}
	}
	return 0, false, nil
}

// clampSize converts a u64 size for fs.FileInfo.
func clampSize(s uint64) int64 {
	if s > math.MaxInt64 {
		return math.MaxInt64
	}
	return int64(s)
}
