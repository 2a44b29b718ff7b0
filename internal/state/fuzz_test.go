package state

import (
	"slices"
	"strconv"
	"strings"
	"testing"
)

// FuzzParseIDs: command-line ids never panic, and what parses is sorted,
// unique, non-zero and contains every single id given.
func FuzzParseIDs(f *testing.F) {
	for _, s := range []string{"2 5-14 17", "1,2,3", "0", "5-3", "18446744073709551615", "1-1000001", " 7 "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, arg string) {
		ids, err := ParseIDs([]string{arg})
		if err != nil {
			return
		}
		if !slices.IsSorted(ids) || slices.Contains(ids, 0) || len(slices.Compact(slices.Clone(ids))) != len(ids) {
			t.Fatalf("ParseIDs(%q) = %v", arg, ids)
		}
		for _, f := range strings.FieldsFunc(arg, func(r rune) bool { return r == ' ' || r == ',' || r == '\t' }) {
			if id, err := strconv.ParseUint(f, 10, 64); err == nil && !slices.Contains(ids, id) {
				t.Fatalf("ParseIDs(%q) = %v lacks %d", arg, ids, id)
			}
		}
	})
}

// FuzzMountRecord: mount records are written by another program; reading
// one never panics and a record accepted names a transaction or an image.
func FuzzMountRecord(f *testing.F) {
	for _, s := range []string{"7\n", `{"tx": 2, "target": "/usr", "image": "ab"}`, `{"transaction": 8}`, `{}`, `[1]`, `{"tx": -1}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		rec, err := parseMountRecord(data)
		if err == nil && rec.Tx == 0 && rec.Image == "" {
			t.Fatalf("accepted %q as %+v", data, rec)
		}
	})
}
