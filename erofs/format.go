package erofs

import (
	"math/bits"
	"strings"
)

// On-disk constants of composefs EROFS images, shared by the writer and the
// reader. See /work/shared/reference/composefs-format.md (§4–§12). All
// integers are little-endian.

// Composefs header (offset 0, 32 bytes; zero-filled up to SuperblockOffset).
const (
	ComposefsMagic         = 0xd078629a
	ComposefsHeaderVersion = 1
	// ComposefsFlagHasACL is set in the header flags when any inode has a
	// system.posix_acl_access or system.posix_acl_default xattr.
	ComposefsFlagHasACL = 1 << 0
	ComposefsHeaderSize = 32
	// MaxComposefsVersion is the newest composefs_version a writer produces.
	MaxComposefsVersion = 1
)

// EROFS superblock.
const (
	SuperblockOffset = 1024
	SuperblockSize   = 128
	SuperMagic       = 0xE0F5E1E2

	FeatureCompatSbChksum    = 0x1
	FeatureCompatMtime       = 0x2
	FeatureCompatXattrFilter = 0x4

	BlockBits = 12
	BlockSize = 1 << BlockBits
	// SlotBits: nid = byte offset >> SlotBits.
	SlotBits = 5
	SlotSize = 1 << SlotBits

	// InodesStart is the byte offset of the first inode (the root).
	InodesStart = SuperblockOffset + SuperblockSize
	// RootNid is the nid of the root inode in a composefs image.
	RootNid = InodesStart / SlotSize
)

// Inode layouts.
const (
	InodeCompactSize  = 32
	InodeExtendedSize = 64

	// i_format = datalayout<<1 | version bit.
	InodeFormatExtended = 1

	LayoutFlatPlain  = 0
	LayoutFlatInline = 2
	LayoutChunkBased = 4

	// Chunk format (i_u of CHUNK_BASED inodes): low bits = chunkbits - BlockBits.
	ChunkFormatBlkbitsMask = 0x1f
	ChunkFormatIndexes     = 0x20

	// NullAddr is a chunk map entry for a hole (data from the overlay data layer).
	NullAddr = 0xFFFFFFFF

	// MaxChunkBits caps chunk size at 8 TiB; MaxChunks is the largest chunk table.
	MaxChunkBits = 43
	MaxChunks    = 1024
)

// Directory entries.
const (
	DirentSize = 12

	FileTypeUnknown = 0
	FileTypeReg     = 1
	FileTypeDir     = 2
	FileTypeChr     = 3
	FileTypeBlk     = 4
	FileTypeFifo    = 5
	FileTypeSock    = 6
	FileTypeSymlink = 7
)

// Xattrs.
const (
	XattrHeaderSize = 12
	XattrEntrySize  = 4 // e_name_len, e_name_index, e_value_size
	// XattrFilterSeed is the xxh32 seed base of the bloom filter; the name
	// index is added to it.
	XattrFilterSeed = 0x25BBE08F
	// MaxSharedXattrRefs is how many shared xattrs one inode references at most.
	MaxSharedXattrRefs = 128

	XattrIndexNone       = 0
	XattrIndexUser       = 1
	XattrIndexACLAccess  = 2
	XattrIndexACLDefault = 3
	XattrIndexTrusted    = 4
	XattrIndexLustre     = 5
	XattrIndexSecurity   = 6
)

// Overlay xattr names used by composefs.
const (
	XattrOverlayPrefix     = "trusted.overlay."
	XattrOverlayEscPrefix  = "trusted.overlay.overlay."
	XattrUserOverlayPrefix = "user.overlay."

	XattrMetacopy  = "trusted.overlay.metacopy"
	XattrRedirect  = "trusted.overlay.redirect"
	XattrOpaque    = "trusted.overlay.opaque"
	XattrACLAccess = "system.posix_acl_access"
	XattrACLDflt   = "system.posix_acl_default"

	XattrEscWhiteout      = "trusted.overlay.overlay.whiteout"
	XattrEscWhiteouts     = "trusted.overlay.overlay.whiteouts"
	XattrEscOpaque        = "trusted.overlay.overlay.opaque"
	XattrUserWhiteout     = "user.overlay.whiteout"
	XattrUserWhiteouts    = "user.overlay.whiteouts"
	XattrUserOpaque       = "user.overlay.opaque"
	XattrSelinux          = "security.selinux"
	MetacopyHeaderSize    = 4
	MetacopyDigestSize    = 32
	MetacopySize          = MetacopyHeaderSize + MetacopyDigestSize
	MetacopyHashAlgSHA256 = 1
)

// xattrPrefixes maps name indexes to prefixes. posix_acl_* are whole names.
var xattrPrefixes = [...]string{
	XattrIndexUser:       "user.",
	XattrIndexACLAccess:  XattrACLAccess,
	XattrIndexACLDefault: XattrACLDflt,
	XattrIndexTrusted:    "trusted.",
	XattrIndexSecurity:   "security.",
}

// XattrPrefix returns the name prefix of an e_name_index, and whether the
// index is known. Index 0 has the empty prefix.
func XattrPrefix(index uint8) (string, bool) {
	if index == XattrIndexNone {
		return "", true
	}
	if int(index) >= len(xattrPrefixes) || xattrPrefixes[index] == "" {
		return "", false
	}
	return xattrPrefixes[index], true
}

// SplitXattrName returns the e_name_index and stored suffix of a full xattr
// name, as mkcomposefs chooses them: the first matching prefix among user.,
// system.posix_acl_access, system.posix_acl_default, trusted., security.;
// otherwise index 0 with the full name.
func SplitXattrName(name string) (uint8, string) {
	switch {
	case strings.HasPrefix(name, "user."):
		return XattrIndexUser, name[len("user."):]
	case strings.HasPrefix(name, XattrACLAccess):
		return XattrIndexACLAccess, name[len(XattrACLAccess):]
	case strings.HasPrefix(name, XattrACLDflt):
		return XattrIndexACLDefault, name[len(XattrACLDflt):]
	case strings.HasPrefix(name, "trusted."):
		return XattrIndexTrusted, name[len("trusted."):]
	case strings.HasPrefix(name, "security."):
		return XattrIndexSecurity, name[len("security."):]
	}
	return XattrIndexNone, name
}

// XattrFilterBit returns the bloom filter bit (0..31) of an xattr with the
// given e_name_index and stored suffix.
func XattrFilterBit(index uint8, suffix string) uint {
	return uint(xxh32(suffix, XattrFilterSeed+uint32(index)) & 31)
}

// Header is the composefs header at offset 0.
type Header struct {
	Magic            uint32
	Version          uint32
	Flags            uint32
	ComposefsVersion uint32
	Unused           [4]uint32
}

// Superblock is the EROFS superblock at SuperblockOffset (128 bytes).
type Superblock struct {
	Magic           uint32
	Checksum        uint32
	FeatureCompat   uint32
	BlkSzBits       uint8
	SbExtSlots      uint8
	RootNid         uint16
	Inos            uint64
	BuildTime       uint64
	BuildTimeNsec   uint32
	Blocks          uint32
	MetaBlkAddr     uint32
	XattrBlkAddr    uint32
	UUID            [16]uint8
	VolumeName      [16]uint8
	FeatureIncompat uint32
	Union1          uint16
	ExtraDevices    uint16
	DevtSlotOff     uint16
	DirBlkBits      uint8
	XattrPrefixCnt  uint8
	XattrPrefixStrt uint32
	PackedNid       uint64
	XattrFilterRsvd uint8
	Reserved2       [23]uint8
}

// InodeCompact is the 32-byte compact inode.
type InodeCompact struct {
	Format     uint16
	XattrCount uint16
	Mode       uint16
	Nlink      uint16
	Size       uint32
	Reserved   uint32
	U          uint32
	Ino        uint32
	UID        uint16
	GID        uint16
	Reserved2  uint32
}

// InodeExtended is the 64-byte extended inode.
type InodeExtended struct {
	Format     uint16
	XattrCount uint16
	Mode       uint16
	Reserved   uint16
	Size       uint64
	U          uint32
	Ino        uint32
	UID        uint32
	GID        uint32
	Mtime      uint64
	MtimeNsec  uint32
	Nlink      uint32
	Reserved2  [16]uint8
}

// XattrHeader starts an inode's xattr area (12 bytes).
type XattrHeader struct {
	NameFilter  uint32
	SharedCount uint8
	Reserved    [7]uint8
}

// XattrEntry precedes an xattr's name suffix and value (4 bytes).
type XattrEntry struct {
	NameLen   uint8
	NameIndex uint8
	ValueSize uint16
}

// Dirent is one directory entry record (12 bytes).
type Dirent struct {
	Nid      uint64
	NameOff  uint16
	FileType uint8
	Reserved uint8
}

// XattrAreaSize returns the byte size of an inode's xattr area from its
// i_xattr_icount (0 when there is none).
func XattrAreaSize(icount uint16) int {
	if icount == 0 {
		return 0
	}
	return XattrHeaderSize + 4*(int(icount)-1)
}

// FileTypeOfMode returns the EROFS dirent file type of a st_mode.
func FileTypeOfMode(mode uint32) uint8 {
	switch mode & 0o170000 {
	case 0o100000:
		return FileTypeReg
	case 0o040000:
		return FileTypeDir
	case 0o020000:
		return FileTypeChr
	case 0o060000:
		return FileTypeBlk
	case 0o010000:
		return FileTypeFifo
	case 0o140000:
		return FileTypeSock
	case 0o120000:
		return FileTypeSymlink
	}
	return FileTypeUnknown
}

// xxh32 is the 32-bit xxHash of s with the given seed (used by the xattr
// bloom filter).
func xxh32(s string, seed uint32) uint32 {
	const (
		p1 = 2654435761
		p2 = 2246822519
		p3 = 3266489917
		p4 = 668265263
		p5 = 374761393
	)
	n := len(s)
	var h uint32
	i := 0
	if n >= 16 {
		v1 := seed + p1 + p2
		v2 := seed + p2
		v3 := seed
		v4 := seed - p1
		for ; i+16 <= n; i += 16 {
			v1 = bits.RotateLeft32(v1+le32(s[i:])*p2, 13) * p1
			v2 = bits.RotateLeft32(v2+le32(s[i+4:])*p2, 13) * p1
			v3 = bits.RotateLeft32(v3+le32(s[i+8:])*p2, 13) * p1
			v4 = bits.RotateLeft32(v4+le32(s[i+12:])*p2, 13) * p1
		}
		h = bits.RotateLeft32(v1, 1) + bits.RotateLeft32(v2, 7) + bits.RotateLeft32(v3, 12) + bits.RotateLeft32(v4, 18)
	} else {
		h = seed + p5
	}
	h += uint32(n)
	for ; i+4 <= n; i += 4 {
		h += le32(s[i:]) * p3
		h = bits.RotateLeft32(h, 17) * p4
	}
	for ; i < n; i++ {
		h += uint32(s[i]) * p5
		h = bits.RotateLeft32(h, 11) * p1
	}
	h ^= h >> 15
	h *= p2
	h ^= h >> 13
	h *= p3
	h ^= h >> 16
	return h
}

func le32(s string) uint32 {
	return uint32(s[0]) | uint32(s[1])<<8 | uint32(s[2])<<16 | uint32(s[3])<<24
}
