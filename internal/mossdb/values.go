package mossdb

import (
	"fmt"
	"math/big"
	"strings"

	"github.com/mossfs/mossfs/internal/stone"
)

// EntryType is a layout row's entry_type.
type EntryType string

// The entry types moss writes.
const (
	Regular    EntryType = "regular"
	Symlink    EntryType = "symlink"
	Directory  EntryType = "directory"
	CharDevice EntryType = "character-device"
	BlockDev   EntryType = "block-device"
	Fifo       EntryType = "fifo"
	Socket     EntryType = "socket"
	Unknown    EntryType = "unknown"
)

// RawLayout is one db/layout row as stored: nothing in it is trusted yet.
type RawLayout struct {
	ID        int64
	PackageID string
	UID, GID  int64
	Mode      int64
	Tag       int64
	Type      string
	Value1    *string
	Value2    *string
}

// Entry is a checked layout row.
type Entry struct {
	// ID is the row id (layout.id): rows of one package come in this order.
	ID        int64
	PackageID string
	UID, GID  uint32
	// Mode is the full st_mode as moss stored it (type bits included).
	Mode uint32
	Type EntryType
	// Digest is a regular file's XXH3-128.
	Digest stone.XXH128
	// Target is a symlink's link text.
	Target string
	// Path is relative to /usr: clean, no leading slash, no "." or "..".
	Path string
}

// ParseLayout checks one row the way moss decodes it (decode_entry), and
// more strictly: the path must be a clean relative path, the digest a
// decimal u128, owners and mode 32-bit. Errors name the row.
func ParseLayout(r RawLayout) (Entry, error) {
	e := Entry{ID: r.ID, PackageID: r.PackageID}
	fail := func(format string, args ...any) (Entry, error) {
		return Entry{}, fmt.Errorf("db/layout row %d (package %s): %s", r.ID, r.PackageID, fmt.Sprintf(format, args...))
	}
	var ok bool
	if e.UID, ok = u32(r.UID); !ok {
		return fail("uid %d out of range", r.UID)
	}
	if e.GID, ok = u32(r.GID); !ok {
		return fail("gid %d out of range", r.GID)
	}
	if e.Mode, ok = u32(r.Mode); !ok {
		return fail("mode %d out of range", r.Mode)
	}
	if r.PackageID == "" {
		return fail("empty package_id")
	}
	val := func(p *string, what string) (string, error) {
		if p == nil {
			return "", fmt.Errorf("%s is NULL", what)
		}
		return *p, nil
	}
	e.Type = EntryType(r.Type)
	var path string
	var err error
	switch e.Type {
	case Regular:
		d, err := val(r.Value1, "entry_value1 (digest)")
		if err != nil {
			return fail("%v", err)
		}
		if e.Digest, err = ParseDigest(d); err != nil {
			return fail("%v", err)
		}
		path, err = val(r.Value2, "entry_value2 (path)")
	case Symlink:
		if e.Target, err = val(r.Value1, "entry_value1 (link text)"); err != nil {
			return fail("%v", err)
		}
		if e.Target == "" || len(e.Target) >= 4096 || strings.IndexByte(e.Target, 0) >= 0 {
			return fail("bad symlink target %q", e.Target)
		}
		path, err = val(r.Value2, "entry_value2 (path)")
	case Directory, CharDevice, BlockDev, Fifo, Socket:
		path, err = val(r.Value1, "entry_value1 (path)")
	case Unknown:
		path, err = val(r.Value2, "entry_value2 (path)")
	default:
		return fail("unknown entry_type %q", r.Type)
	}
	if err != nil {
		return fail("%v", err)
	}
	if err := CheckPath(path); err != nil {
		return fail("path %q: %v", path, err)
	}
	e.Path = path
	if e.Type == Regular && e.Mode&0o170000 != 0 && e.Mode&0o170000 != 0o100000 {
		return fail("regular file %s with mode %o", path, e.Mode)
	}
	return e, nil
}

// u32 accepts what moss writes for a u32 (it stores them as i32, so values
// of 2^31 and above come back negative) and the plain unsigned value.
func u32(v int64) (uint32, bool) {
	if v < -(1<<31) || v > 1<<32-1 {
		return 0, false
	}
	return uint32(v), true
}

var maxU128 = new(big.Int).Lsh(big.NewInt(1), 128)

// ParseDigest parses a decimal u128 (how db/layout stores XXH3-128
// digests) into the stone's big-endian byte order.
func ParseDigest(s string) (stone.XXH128, error) {
	var x stone.XXH128
	if s == "" || len(s) > 39 {
		return x, fmt.Errorf("digest %q: not a decimal u128", s)
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return x, fmt.Errorf("digest %q: not a decimal u128", s)
		}
	}
	if len(s) > 1 && s[0] == '0' {
		return x, fmt.Errorf("digest %q: leading zero (moss writes none)", s)
	}
	n, ok := new(big.Int).SetString(s, 10)
	if !ok || n.Cmp(maxU128) >= 0 {
		return x, fmt.Errorf("digest %q: not a decimal u128", s)
	}
	n.FillBytes(x[:])
	return x, nil
}

// FormatDigest is ParseDigest's inverse: the decimal string moss writes.
func FormatDigest(x stone.XXH128) string {
	return new(big.Int).SetBytes(x[:]).String()
}

// CheckPath accepts clean relative paths only: no leading slash, no empty,
// "." or ".." components, no NUL, components of at most 255 bytes, at most
// 4095 bytes in all.
func CheckPath(p string) error {
	switch {
	case p == "":
		return fmt.Errorf("empty path")
	case p[0] == '/':
		return fmt.Errorf("absolute path (layout paths are relative to /usr)")
	case strings.IndexByte(p, 0) >= 0:
		return fmt.Errorf("embedded NUL")
	case len(p) > 4095:
		return fmt.Errorf("path of %d bytes", len(p))
	}
	for c := range strings.SplitSeq(p, "/") {
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
