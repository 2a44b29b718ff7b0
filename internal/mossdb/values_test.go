package mossdb

import (
	"math/big"
	"strings"
	"testing"

	"github.com/mossfs/mossfs/internal/stone"
)

func str(s string) *string { return &s }

func TestParseDigest(t *testing.T) {
	// The bash-completion digest with a leading zero byte
	// (expected.json's cas_paths_leading_zero).
	x := stone.XXH128{0x06, 0x43, 0xff, 0x65, 0xbb, 0xfa, 0xea, 0x9e, 0xeb, 0x05, 0x01, 0xfe, 0xbf, 0xf1, 0x4e, 0x5c}
	dec := new(big.Int).SetBytes(x[:]).String()
	got, err := ParseDigest(dec)
	if err != nil || got != x {
		t.Fatalf("ParseDigest(%s) = %s, %v; want %s", dec, got, err, x)
	}
	if FormatDigest(x) != dec {
		t.Fatalf("FormatDigest = %s, want %s", FormatDigest(x), dec)
	}
	if stone.MossAssetPath(got) != "64/3f/f6/643ff65bbfaea9eeb0501febff14e5c" {
		t.Fatalf("asset path %s", stone.MossAssetPath(got))
	}
	max := new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), 128), big.NewInt(1)).String()
	if _, err := ParseDigest(max); err != nil {
		t.Fatalf("2^128-1: %v", err)
	}
	for _, bad := range []string{"", "-1", "0x12", "1e5", " 12", "012", "340282366920938463463374607431768211456", strings.Repeat("9", 40)} {
		if _, err := ParseDigest(bad); err == nil {
			t.Errorf("ParseDigest(%q) accepted", bad)
		}
	}
}

func TestParseLayout(t *testing.T) {
	ok := []RawLayout{
		{ID: 1, PackageID: "p", Mode: 0o100644, Type: "regular", Value1: str("1"), Value2: str("bin/x")},
		{ID: 2, PackageID: "p", Mode: 0o120777, Type: "symlink", Value1: str("../lib"), Value2: str("lib64")},
		{ID: 3, PackageID: "p", Mode: 0o40755, UID: -2, Type: "directory", Value1: str("share")},
	}
	for _, r := range ok {
		if _, err := ParseLayout(r); err != nil {
			t.Errorf("row %d: %v", r.ID, err)
		}
	}
	if e, _ := ParseLayout(ok[2]); e.UID != 1<<32-2 {
		t.Errorf("uid -2 (an i32 as moss stores it) gave %d, want %d", e.UID, uint32(1<<32-2))
	}
	bad := []RawLayout{
		{ID: 4, PackageID: "p", Type: "regular", Value1: str("1"), Value2: str("../x")},
		{ID: 5, PackageID: "p", Type: "regular", Value1: str("1"), Value2: str("/x")},
		{ID: 6, PackageID: "p", Type: "regular", Value1: str("1"), Value2: str("a//b")},
		{ID: 7, PackageID: "p", Type: "regular", Value1: nil, Value2: str("x")},
		{ID: 8, PackageID: "p", Type: "regular", Value1: str("abc"), Value2: str("x")},
		{ID: 9, PackageID: "p", Type: "symlink", Value1: str(""), Value2: str("x")},
		{ID: 10, PackageID: "p", Type: "weird", Value1: str("x")},
		{ID: 11, PackageID: "p", Type: "directory", Value1: str("a/./b")},
		{ID: 12, PackageID: "p", UID: 1 << 33, Type: "directory", Value1: str("a")},
		{ID: 13, PackageID: "", Type: "directory", Value1: str("a")},
		{ID: 14, PackageID: "p", Mode: 0o40755, Type: "regular", Value1: str("1"), Value2: str("x")},
	}
	for _, r := range bad {
		if _, err := ParseLayout(r); err == nil {
			t.Errorf("row %d accepted: %+v", r.ID, r)
		} else if !strings.Contains(err.Error(), "row ") {
			t.Errorf("row %d: error %q does not name the row", r.ID, err)
		}
	}
}

// FuzzParseLayout: database values are input. Whatever a row holds, the
// parser does not panic, and an accepted row has a clean relative path, a
// digest that formats back to its value and a 32-bit owner.
func FuzzParseLayout(f *testing.F) {
	f.Add(int64(1), int64(0), int64(0), int64(0o100644), "regular", "1234", "bin/x", true, true)
	f.Add(int64(2), int64(-2), int64(100), int64(0o120777), "symlink", "lib", "lib64", true, true)
	f.Add(int64(3), int64(0), int64(0), int64(0o40755), "directory", "a/../b", "", true, false)
	f.Add(int64(4), int64(0), int64(0), int64(0), "unknown", "x", "/abs", true, true)
	f.Fuzz(func(t *testing.T, id, uid, gid, mode int64, typ, v1, v2 string, has1, has2 bool) {
		r := RawLayout{ID: id, PackageID: "p", UID: uid, GID: gid, Mode: mode, Type: typ}
		if has1 {
			r.Value1 = &v1
		}
		if has2 {
			r.Value2 = &v2
		}
		e, err := ParseLayout(r)
		if err != nil {
			return
		}
		if CheckPath(e.Path) != nil || strings.HasPrefix(e.Path, "/") || strings.Contains("/"+e.Path+"/", "/../") {
			t.Fatalf("accepted path %q", e.Path)
		}
		if e.Type == Regular && FormatDigest(e.Digest) != v1 {
			t.Fatalf("digest %q parsed to %s, formats back to %s", v1, e.Digest, FormatDigest(e.Digest))
		}
	})
}
