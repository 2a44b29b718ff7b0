package erofs

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/mossfs/mossfs/tree"
)

// TestParseDumpHalves: a dump parsed in two halves at the same time
// (parseLines) gives what parsing it line after line gives: the same tree
// (compared as dumps), or the same error, for every asset of
// shared/testdata/composefs (the should-fail ones too) and for the assets
// with one line broken, in either half, in the ways a dump can be wrong
// before, at and after the line's place in the tree.
func TestParseDumpHalves(t *testing.T) {
	parse := func(dump string, opts DumpOptions, halves bool) string {
		return dumpOrError(parseAs([]byte(dump), opts, halves))
	}
	positive, negative := composefsAssets(t)
	r := rand.New(rand.NewPCG(7, 7))
	broken := 0
	for _, a := range append(positive, negative...) {
		dump := string(readAsset(t, a))
		opts := DumpOptions{Name: a.name, Strict: a.strict}
		if want, got := parse(dump, opts, false), parse(dump, opts, true); got != want {
			t.Errorf("%s: in halves\n%.300s\nline after line\n%.300s", a.name, got, want)
		}
		lines := strings.Split(strings.TrimSuffix(dump, "\n"), "\n")
		if len(lines) < 4 {
			continue
		}
		// Lines near the middle (where the halves meet) and some at random.
		picks := []int{len(lines)/2 - 1, len(lines) / 2, len(lines)/2 + 1, len(lines) - 1}
		for range 6 {
			picks = append(picks, 1+r.IntN(len(lines)-1))
		}
		for _, k := range picks {
			f := strings.Fields(lines[k])
			if len(f) < 8 {
				continue
			}
			for _, bad := range []string{
				"",          // empty line
				f[0] + " 1", // missing fields
				f[0] + " 1 notoctal " + strings.Join(f[3:], " "), // MODE, before the place
				f[0] + " x " + strings.Join(f[2:], " "),          // SIZE, after it
				"/no/such/parent/x " + strings.Join(f[1:], " "),  // parent missing (the place)
				lines[k-1], // a duplicate of the line before
				f[0] + " 0 @100644 1 0 0 0 0.0 /no/such/target - -", // hardlink to nothing
				lines[k] + " user.x", // xattr without '='
			} {
				l := append([]string(nil), lines...)
				l[k] = bad
				d := strings.Join(l, "\n") + "\n"
				if want, got := parse(d, opts, false), parse(d, opts, true); got != want {
					t.Errorf("%s, line %d as %q: in halves\n%.300s\nline after line\n%.300s", a.name, k+1, bad, got, want)
				}
				broken++
			}
		}
	}
	if broken < 100 {
		t.Fatalf("only %d broken dumps tried", broken)
	}
	t.Logf("%d assets, %d broken variants: the same", len(positive)+len(negative), broken)

	// A line wrong both in its place and after it is reported for its
	// place, as when lines were parsed and placed in one go; in either
	// half.
	head := "/ 0 40755 2 0 0 0 0.0 - - -\n"
	var filler strings.Builder
	for i := range 200 {
		fmt.Fprintf(&filler, "/f%03d 0 100644 1 0 0 0 0.0 - - -\n", i)
	}
	for _, at := range []string{"first", "second"} {
		d := head + "/a/b x 100644 1 0 0 0 0.0 - - -\n" + filler.String()
		if at == "second" {
			d = head + filler.String() + "/a/b x 100644 1 0 0 0 0.0 - - -\n"
		}
		for _, halves := range []bool{false, true} {
			if got := parse(d, DumpOptions{Name: "d"}, halves); !strings.Contains(got, "/a/b: parent directory missing") {
				t.Errorf("bad line in the %s half, halves %v: %q, want the missing parent", at, halves, got)
			}
		}
	}
}

// parseAs parses data in two halves at the same time (parseLines), or line
// after line, whatever its size.
func parseAs(data []byte, opts DumpOptions, halves bool) (*tree.Node, error) {
	defer func(n int) { parallelParseMin = n }(parallelParseMin)
	parallelParseMin = 1 << 62
	if halves {
		parallelParseMin = 1
	}
	return ParseDump(bytes.NewReader(data), opts)
}

// dumpOrError is what a parse gave, to compare: the tree as a dump, or the
// error.
func dumpOrError(root *tree.Node, err error) string {
	if err != nil {
		return "error: " + err.Error()
	}
	var b bytes.Buffer
	if err := WriteDump(&b, root); err != nil {
		return "dump error: " + err.Error()
	}
	return b.String()
}
