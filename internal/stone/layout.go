package stone

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strings"
)

// LayoutType is the file type of a Layout entry.
type LayoutType uint8

// Layout file types.
const (
	LayoutRegular     LayoutType = 1
	LayoutSymlink     LayoutType = 2
	LayoutDirectory   LayoutType = 3
	LayoutCharDevice  LayoutType = 4
	LayoutBlockDevice LayoutType = 5
	LayoutFifo        LayoutType = 6
	LayoutSocket      LayoutType = 7
)

var layoutTypeNames = [...]string{"", "Regular", "Symlink", "Directory", "CharDevice", "BlockDevice", "Fifo", "Socket"}

func (t LayoutType) String() string {
	if t >= 1 && t <= LayoutSocket {
		return layoutTypeNames[t]
	}
	return fmt.Sprintf("Unknown(%d)", uint8(t))
}

// XXH128 is an XXH3-128 digest in the stone's byte order (big endian: high
// half first), which is also its hex order.
type XXH128 [16]byte

func (x XXH128) String() string { return hex.EncodeToString(x[:]) }

// EmptyXXH128 is the XXH3-128 of no bytes: the digest of empty files.
var EmptyXXH128 = XXH128{0x99, 0xaa, 0x06, 0xd3, 0x01, 0x47, 0x98, 0xd8, 0x60, 0x01, 0xc3, 0x24, 0x46, 0x8d, 0x49, 0x7f}

// LayoutEntry is one file of the package.
type LayoutEntry struct {
	UID, GID uint32
	Mode     uint32 // st_mode as stored (type bits included)
	Tag      uint32
	Type     LayoutType
	// Digest is the XXH3-128 of a regular file's content.
	Digest XXH128
	// Source is a symlink's target, trailing NULs trimmed.
	Source string
	// Target is the path relative to /usr, trailing NULs trimmed.
	Target string
}

const layoutFixed = 32

func (p *Package) parseLayout(h *PayloadHeader, b []byte) ([]LayoutEntry, error) {
	if uint64(h.NumRecords) > uint64(len(b))/layoutFixed {
		return nil, p.errorf(h.Offset, "Layout payload: %d records cannot fit in %d bytes", h.NumRecords, len(b))
	}
	out := make([]LayoutEntry, 0, h.NumRecords)
	for i := uint32(0); i < h.NumRecords; i++ {
		if len(b) < layoutFixed {
			return nil, p.errorf(h.Offset, "Layout record %d: truncated", i)
		}
		e := LayoutEntry{
			UID:  binary.BigEndian.Uint32(b),
			GID:  binary.BigEndian.Uint32(b[4:]),
			Mode: binary.BigEndian.Uint32(b[8:]),
			Tag:  binary.BigEndian.Uint32(b[12:]),
			Type: LayoutType(b[20]),
		}
		sl, tl := int(binary.BigEndian.Uint16(b[16:])), int(binary.BigEndian.Uint16(b[18:]))
		b = b[layoutFixed:]
		if sl+tl > len(b) {
			return nil, p.errorf(h.Offset, "Layout record %d: source %d + target %d bytes, %d remain", i, sl, tl, len(b))
		}
		src, tgt := b[:sl], b[sl:sl+tl]
		b = b[sl+tl:]
		e.Target = cstring(tgt)
		if err := checkTarget(e.Target); err != nil {
			return nil, p.errorf(h.Offset, "Layout record %d: target %q: %v", i, e.Target, err)
		}
		switch e.Type {
		case LayoutRegular:
			if sl != 16 {
				return nil, p.errorf(h.Offset, "Layout record %d (%s): regular file source of %d bytes, want a 16-byte digest", i, e.Target, sl)
			}
			e.Digest = XXH128(src)
		case LayoutSymlink:
			e.Source = cstring(src)
			if e.Source == "" || len(e.Source) >= 4096 || strings.IndexByte(e.Source, 0) >= 0 {
				return nil, p.errorf(h.Offset, "Layout record %d (%s): bad symlink target %q", i, e.Target, e.Source)
			}
		case LayoutDirectory, LayoutCharDevice, LayoutBlockDevice, LayoutFifo, LayoutSocket:
		default:
			return nil, p.errorf(h.Offset, "Layout record %d (%s): unknown file type %d", i, e.Target, e.Type)
		}
		out = append(out, e)
	}
	if len(b) != 0 {
		return nil, p.errorf(h.Offset, "Layout payload: %d bytes after %d records", len(b), h.NumRecords)
	}
	return out, nil
}

// checkTarget accepts clean relative paths only: no leading slash, no
// empty, "." or ".." components, no NUL, components of at most 255 bytes.
func checkTarget(t string) error {
	if t == "" {
		return fmt.Errorf("empty path")
	}
	if t[0] == '/' {
		return fmt.Errorf("absolute path (targets are relative to /usr)")
	}
	if strings.IndexByte(t, 0) >= 0 {
		return fmt.Errorf("embedded NUL")
	}
	for c := range strings.SplitSeq(t, "/") {
		switch {
		case c == "":
			return fmt.Errorf("empty path component")
		case c == "." || c == "..":
			return fmt.Errorf("%q path component", c)
		case len(c) > 255:
			return fmt.Errorf("path component of %d bytes", len(c))
		}
	}
	return nil
}

// IndexEntry locates one unique content in the decompressed Content payload.
type IndexEntry struct {
	Start, End uint64 // [Start, End) in the decompressed content
	Digest     XXH128
}

// Size is the content's length.
func (e IndexEntry) Size() uint64 { return e.End - e.Start }

func (p *Package) parseIndex(h *PayloadHeader, b []byte) ([]IndexEntry, error) {
	if uint64(len(b)) != uint64(h.NumRecords)*32 {
		return nil, p.errorf(h.Offset, "Index payload: %d bytes for %d records of 32 bytes", len(b), h.NumRecords)
	}
	out := make([]IndexEntry, h.NumRecords)
	for i := range out {
		r := b[32*i:]
		out[i] = IndexEntry{
			Start:  binary.BigEndian.Uint64(r),
			End:    binary.BigEndian.Uint64(r[8:]),
			Digest: XXH128(r[16:32]),
		}
		if out[i].Start > out[i].End {
			return nil, p.errorf(h.Offset, "Index record %d (%s): start %d after end %d", i, out[i].Digest, out[i].Start, out[i].End)
		}
	}
	return out, nil
}

// checkIndex checks index ranges against the Content payload and layout
// digests against the index, once every payload is known.
func (p *Package) checkIndex() error {
	if p.Index != nil && p.Layout == nil {
		return p.errorf(-1, "an Index payload but no Layout payload")
	}
	var plain uint64
	if p.content != nil {
		plain = p.content.PlainSize
	}
	sizes := make(map[XXH128]uint64, len(p.Index))
	for i, e := range p.Index {
		if e.End > plain {
			return p.errorf(-1, "Index record %d (%s): range [%d, %d) beyond the %d bytes of content", i, e.Digest, e.Start, e.End, plain)
		}
		if e.Start == e.End && e.Digest != EmptyXXH128 {
			return p.errorf(-1, "Index record %d: empty range with digest %s (the empty digest is %s)", i, e.Digest, EmptyXXH128)
		}
		if size, ok := sizes[e.Digest]; ok && size != e.Size() {
			return p.errorf(-1, "Index record %d (%s): %d bytes, another range with that digest has %d", i, e.Digest, e.Size(), size)
		}
		sizes[e.Digest] = e.Size()
	}
	for _, e := range p.Layout {
		if e.Type == LayoutRegular && !inIndexOf(sizes, e.Digest) && e.Digest != EmptyXXH128 {
			return p.errorf(-1, "Layout entry %s: content %s is not in the index", e.Target, e.Digest)
		}
	}
	return nil
}

func inIndexOf(sizes map[XXH128]uint64, x XXH128) bool {
	_, ok := sizes[x]
	return ok
}

// MossAssetPath is where moss keeps the content x in its store, relative to
// .moss/assets/v2: the digest in lowercase hex without leading zeros, under
// three levels of two-digit directories (none for fewer than 10 digits).
func MossAssetPath(x XXH128) string {
	h := strings.TrimLeft(x.String(), "0")
	if h == "" {
		h = "0"
	}
	if len(h) < 10 {
		return h
	}
	return h[0:2] + "/" + h[2:4] + "/" + h[4:6] + "/" + h
}
