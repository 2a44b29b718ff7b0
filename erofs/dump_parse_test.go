package erofs

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mossfs/mossfs/internal/testenv"
	"github.com/mossfs/mossfs/tree"
)

// composefsAsset is one dump of shared/testdata/composefs.
type composefsAsset struct {
	name    string // file name, e.g. "special.dump"
	path    string
	sha256  string // expected image sha256 ("" for should-fail assets)
	version int    // -1: default range; else min = max = version
	strict  bool
}

// lenientAssets are parsed without strict mode, as upstream's test does.
var lenientAssets = map[string]bool{
	"no-newline.dump":                      true,
	"longlink.dump":                        true,
	"honggfuzz-longlink-unterminated.dump": true,
}

func composefsAssets(t testing.TB) (positive, negative []composefsAsset) {
	t.Helper()
	dir := testenv.SharedPath(t, "testdata", "composefs")
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		name := e.Name()
		if !strings.HasSuffix(name, ".dump") && !strings.HasSuffix(name, ".dump.gz") {
			continue
		}
		a := composefsAsset{name: name, path: filepath.Join(dir, name), version: -1, strict: !lenientAssets[name]}
		if strings.HasPrefix(name, "should-fail-") {
			negative = append(negative, a)
			continue
		}
		sum, err := os.ReadFile(a.path + ".sha256")
		if err != nil {
			continue
		}
		a.sha256 = strings.Fields(string(sum))[0]
		if v, err := os.ReadFile(a.path + ".version"); err == nil {
			switch strings.TrimSpace(string(v)) {
			case "0":
				a.version = 0
			case "1":
				a.version = 1
			default:
				t.Fatalf("%s.version: unexpected %q", name, v)
			}
		}
		positive = append(positive, a)
	}
	if len(positive) < 13 || len(negative) < 14 {
		t.Fatalf("found %d positive and %d negative composefs assets in %s, want 13 and 14", len(positive), len(negative), dir)
	}
	return positive, negative
}

// readAsset returns the dump text (gunzipped).
func readAsset(t testing.TB, a composefsAsset) []byte {
	t.Helper()
	data, err := os.ReadFile(a.path)
	if err != nil {
		t.Fatal(err)
	}
	if strings.HasSuffix(a.name, ".gz") {
		zr, err := gzip.NewReader(bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		if data, err = io.ReadAll(zr); err != nil {
			t.Fatal(err)
		}
	}
	return data
}

func parseAsset(t testing.TB, a composefsAsset) *tree.Node {
	t.Helper()
	root, err := ParseDump(bytes.NewReader(readAsset(t, a)), DumpOptions{Strict: a.strict, Name: a.name})
	if err != nil {
		t.Fatalf("ParseDump: %v", err)
	}
	return root
}

func TestParseDumpAssets(t *testing.T) {
	positive, negative := composefsAssets(t)
	for _, a := range positive {
		t.Run(a.name, func(t *testing.T) {
			root := parseAsset(t, a)
			if !root.IsDir() || root.Parent != nil {
				t.Fatalf("root is not a directory")
			}
			// The in-memory parse (no copy) gives the same tree.
			var want, got bytes.Buffer
			if err := WriteDump(&want, root); err != nil {
				t.Fatal(err)
			}
			root2, err := ParseDumpBytes(readAsset(t, a), DumpOptions{Name: a.name})
			if err != nil {
				t.Fatalf("ParseDumpBytes: %v", err)
			}
			if err := WriteDump(&got, root2); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(want.Bytes(), got.Bytes()) {
				t.Errorf("ParseDumpBytes and ParseDump differ:\n%s\n%s", got.Bytes(), want.Bytes())
			}
		})
	}
	for _, a := range negative {
		t.Run(a.name, func(t *testing.T) {
			// Lenient parsing, so the error is the one the asset is about.
			_, err := ParseDump(bytes.NewReader(readAsset(t, a)), DumpOptions{Name: a.name})
			if err == nil {
				t.Fatal("ParseDump accepted it")
			}
			var de *DumpError
			if !errors.As(err, &de) || de.Name != a.name || de.Line < 1 || !strings.HasPrefix(err.Error(), a.name+":") {
				t.Errorf("error %q does not name the input and line", err)
			}
			t.Log(err)
		})
	}
}

// negativeReasons is what each should-fail asset must be refused for (a
// substring of the error); some assets break more than one rule.
var negativeReasons = map[string]string{
	"should-fail-big-inline.dump":           "more than 5000",
	"should-fail-dir-hardlink.dump":         "directory",
	"should-fail-dot-name.dump":             `"." is not allowed`,
	"should-fail-dotdot-name.dump":          `".." is not allowed`,
	"should-fail-empty-link-name.dump":      "symlink without a target",
	"should-fail-empty-name.dump":           "empty file name",
	"should-fail-empty-xattr-key.dump":      "empty xattr name",
	"should-fail-honggfuzz-long-xattr.dump": "xattrs need",
	"should-fail-long-link.dump":            "symlink target of",
	"should-fail-long-xattr-key.dump":       "xattr",
	"should-fail-long-xattr-value.dump":     "xattr",
	"should-fail-no-ftype.dump":             "no valid file type",
	"should-fail-self-hardlink.dump":        "hardlink to itself",
	"should-fail-too-big.dump":              "file too big",
}

func TestParseDumpNegativeReasons(t *testing.T) {
	_, negative := composefsAssets(t)
	for _, a := range negative {
		want, ok := negativeReasons[a.name]
		if !ok {
			t.Errorf("%s: no expected reason listed", a.name)
			continue
		}
		for _, strict := range []bool{false, true} {
			_, err := ParseDump(bytes.NewReader(readAsset(t, a)), DumpOptions{Strict: strict, Name: a.name})
			if err == nil {
				t.Errorf("%s (strict %v): accepted", a.name, strict)
				continue
			}
			if !strict && !strings.Contains(err.Error(), want) {
				t.Errorf("%s: error %q does not say %q", a.name, err, want)
			}
		}
	}
}

func parseString(t *testing.T, s string, strict bool) (*tree.Node, error) {
	t.Helper()
	return ParseDump(strings.NewReader(s), DumpOptions{Strict: strict, Name: "test.dump"})
}

func TestParseDumpErrors(t *testing.T) {
	const root = "/ 4096 40755 2 0 0 0 0.0 - - -\n"
	for _, c := range []struct {
		name, dump string
		strict     bool
		want       string // substring of the error, with the line
	}{
		{"empty input", "", false, "test.dump:1: empty"},
		{"only newline", "\n", false, "test.dump:1: empty line"},
		{"empty line", root + "\n/a 0 100644 1 0 0 0 0.0\n", false, "test.dump:2: empty line"},
		{"double final newline", root + "/a 0 100644 1 0 0 0 0.0\n\n", false, "test.dump:3: empty line"},
		{"first not root", "/a 0 100644 1 0 0 0 0.0\n", false, "test.dump:1: /a: the first line must be the root"},
		{"root not dir", "/ 0 100644 1 0 0 0 0.0\n", false, "root must be a directory"},
		{"two roots", root + root, false, "test.dump:2: a second root"},
		{"missing fields", root + "/a 0 100644 1 0 0 0\n", false, "test.dump:2: missing MTIME"},
		{"empty field", root + "/a 0  100644 1 0 0 0 0.0\n", false, "empty MODE field"},
		{"two trailing spaces", root + "/a 0 100644 1 0 0 0 0.0 - - -  \n", false, "empty xattr field"},
		{"two spaces between xattrs", root + "/a 0 100644 1 0 0 0 0.0 - - - user.a=1  user.b=2\n", false, "empty xattr field"},
		{"xattr without =", root + "/a 0 100644 1 0 0 0 0.0 - - - user.novalue\n", false, `test.dump:2: /a: xattr "user.novalue" has no '=': missing = in xattr`},
		{"xattr without = after one with", root + "/a 0 100644 1 0 0 0 0.0 - - - user.a=1 user.novalue\n", false, "missing = in xattr"},
		{"xattr with only an escaped =", root + "/a 0 100644 1 0 0 0 0.0 - - - user.a\\x3db\n", false, "missing = in xattr"},
		{"empty xattr name", root + "/a 0 100644 1 0 0 0 0.0 - - - =v\n", false, "empty xattr name"},
		{"bad size", root + "/a x 100644 1 0 0 0 0.0\n", false, "SIZE \"x\""},
		{"size trailing junk", root + "/a 1x 100644 1 0 0 0 0.0\n", false, "SIZE"},
		{"octal mode", root + "/a 0 100648 1 0 0 0 0.0\n", false, "MODE"},
		{"mtime no dot", root + "/a 0 100644 1 0 0 0 5\n", false, "MTIME"},
		{"mtime two dots", root + "/a 0 100644 1 0 0 0 5.1.2\n", false, "MTIME"},
		{"bad escape", root + "/a\\q 0 100644 1 0 0 0 0.0\n", false, "unsupported escape"},
		{"short hex escape", root + "/a\\x4 0 100644 1 0 0 0 0.0\n", false, "two hex digits"},
		{"bad hex escape", root + "/a\\xzz 0 100644 1 0 0 0 0.0\n", false, "not hex"},
		{"trailing backslash", root + "/a\\ 0 100644 1 0 0 0 0.0\n", false, "no character after"},
		{"nul", root + "/a\x00 0 100644 1 0 0 0 0.0\n", false, "test.dump:2: NUL"},
		{"escaped nul in path", root + "/a\\x00 0 100644 1 0 0 0 0.0\n", false, "NUL"},
		{"parent missing", root + "/d/a 0 100644 1 0 0 0 0.0\n", false, "parent directory missing"},
		{"parent dot", root + "/d 4096 40755 2 0 0 0 0.0\n/d/./a 0 100644 1 0 0 0 0.0\n", false, "parent directory missing"},
		{"parent not dir", root + "/f 0 100644 1 0 0 0 0.0\n/f/a 0 100644 1 0 0 0 0.0\n", false, "parent is not a directory"},
		{"duplicate", root + "/a 0 100644 1 0 0 0 0.0\n/a 0 100644 1 0 0 0 0.0\n", false, "test.dump:3: /a: duplicate"},
		{"duplicate other spelling", root + "/d 4096 40755 2 0 0 0 0.0\n/d/a 0 100644 1 0 0 0 0.0\n//d//a 0 100644 1 0 0 0 0.0\n", false, "duplicate"},
		{"unsorted duplicate", root + "/b 0 100644 1 0 0 0 0.0\n/a 0 100644 1 0 0 0 0.0\n/c 0 100644 1 0 0 0 0.0\n/b 0 100644 1 0 0 0 0.0\n", false, "test.dump:5: /b: duplicate"},
		{"duplicate dir", root + "/d 4096 40755 2 0 0 0 0.0\n/d/x 0 100644 1 0 0 0 0.0\n/d 4096 40755 2 0 0 0 0.0\n", false, "test.dump:4: /d: duplicate"},
		{"long name", root + "/" + strings.Repeat("n", 256) + " 0 100644 1 0 0 0 0.0\n", false, "file name of 256 bytes"},
		{"content size", root + "/a 3 100644 1 0 0 0 0.0 - ab -\n", false, "CONTENT has 2 bytes, SIZE says 3"},
		{"bad digest", root + "/a 3 100644 1 0 0 0 0.0 ab/cd - 12\n", false, "DIGEST \"12\""},
		{"digest non-hex", root + "/a 3 100644 1 0 0 0 0.0 ab/cd - " + strings.Repeat("g", 64) + "\n", false, "DIGEST"},
		{"digest too long", root + "/a 3 100644 1 0 0 0 0.0 ab/cd - " + strings.Repeat("a", 66) + "\n", false, "DIGEST"},
		{"too big", root + "/a 9007199254740993 100644 1 0 0 0 0.0\n", false, "file too big"},
		{"wrapped size", root + "/a -1 100644 1 0 0 0 0.0\n", false, "file too big"},
		{"symlink long", root + "/l 4096 120777 1 0 0 0 0.0 " + strings.Repeat("t", 4096) + "\n", false, "symlink target of 4096 bytes"},
		{"hardlink missing target", root + "/h 0 @100644 1 0 0 0 0.0 /nope\n", false, "test.dump:2: /h: hardlink target /nope does not exist"},
		{"hardlink no target", root + "/h 0 @100644 1 0 0 0 0.0 -\n", false, "hardlink without a target"},
		{"hardlink to dir", root + "/d 4096 40755 2 0 0 0 0.0\n/h 0 @100644 1 0 0 0 0.0 /d\n", false, "hardlink to a directory"},
		{"hardlink cycle", root + "/a 0 @100644 1 0 0 0 0.0 /b\n/b 0 @100644 1 0 0 0 0.0 /a\n", false, "hardlink"},
		{"hardlink bad mode", root + "/a 0 @zz 1 0 0 0 0.0 /b\n", false, "MODE"},
		{"child of hardlink", root + "/f 0 100644 1 0 0 0 0.0\n/h 0 @100644 1 0 0 0 0.0 /f\n/h/x 0 100644 1 0 0 0 0.0\n", false, "parent is not a directory"},
		{"xattr name too long", root + "/a 0 100644 1 0 0 0 0.0 - - - user." + strings.Repeat("k", 251) + "=v\n", false, "xattr name of 256 bytes"},
		{"xattr value too long", root + "/a 0 100644 1 0 0 0 0.0 - - - user.k=" + strings.Repeat("\\x00", 16384*4) + "\n", false, "xattrs take"},
		{"xattr bad escape", root + "/a 0 100644 1 0 0 0 0.0 - - - user.k=\\z\n", false, "value"},
		{"strict no newline", root + "/a 0 100644 1 0 0 0 0.0", true, "test.dump:2: missing newline"},
		{"strict rdev", root + "/a 0 100644 1 0 0 5 0.0\n", true, "RDEV 5"},
		{"strict symlink size", root + "/l 3 120777 1 0 0 0 0.0 target\n", true, "symlink SIZE 3"},
		{"strict symlink content", root + "/l 1 120777 1 0 0 0 0.0 t t\n", true, "CONTENT on a symlink"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := parseString(t, c.dump, c.strict)
			if err == nil {
				t.Fatalf("accepted")
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q does not contain %q", err, c.want)
			}
		})
	}
}

func TestParseDumpFields(t *testing.T) {
	dump := "/ 4096 40755 7 1 2 0 100.5 - - - user.b=2 user.a=1 user.b=3\n" +
		"/-x 0 100644 1 0 0 0 0.0\n" + // sorts before "."
		"/d 99 40700 5 18446744073709551615 4294967296 0 -1.4294967297\n" +
		"/d//f\\x20g 5 100600 2 +7 \t8 0 3.999999999 - ab\\ncd - trusted.overlay.x=y user.k\\x3dv=va\\x3dl\n" +
		"d/e 10 100644 1 0 0 77 1.0 ab/cdef - " + strings.Repeat("AB", 32) + " \n" + // trailing space, no leading slash
		"/l 99 120777 1 0 0 0 0.0 /target -\n" +
		"/c 7 20644 1 0 0 1234 0.0\n" +
		"/b 0 60644 1 0 0 4294967297 0.0\n" +
		"/z 0 100644 1 0 0 0 0.0 ignored/payload -\n" +
		"/h1 123 @100644 9 9 9 9 9.9 /d/e\n" +
		"/h2 0 @0 0 0 0 0 0.0 /h1\n" + // a link to a link
		"/wh 0 20000 1 0 0 0 0.0\n" +
		"/n 0 1100644 1 0 0 0 0.0 - - -" // no final newline, MODE above 16 bits
	root, err := parseString(t, dump, false)
	if err != nil {
		t.Fatal(err)
	}
	names := []string{}
	for _, c := range root.Children {
		names = append(names, c.Name)
	}
	if got, want := strings.Join(names, ","), "-x,b,c,d,h1,h2,l,n,wh,z"; got != want {
		t.Errorf("root children %s, want %s", got, want)
	}
	if v, _ := root.Xattr("user.b"); string(v) != "3" || len(root.Xattrs) != 2 || root.Nlink != 7 || root.UID != 1 || root.GID != 2 || root.Mtime != (tree.Timespec{Sec: 100, Nsec: 5}) {
		t.Errorf("root: %+v", root)
	}
	d := root.Lookup("d")
	if d.UID != 0xffffffff || d.GID != 0 || d.Mtime.Sec != -1 || d.Mtime.Nsec != 1 {
		t.Errorf("d: uid %d gid %d mtime %+v", d.UID, d.GID, d.Mtime)
	}
	f := root.Lookup("d/f g")
	if f == nil || string(f.Content) != "ab\ncd" || f.UID != 7 || f.GID != 8 || f.Nlink != 2 || f.Mtime.Nsec != 999999999 {
		t.Fatalf("d/f g: %+v", f)
	}
	if v, _ := f.Xattr("trusted.overlay.x"); string(v) != "y" {
		t.Errorf("overlay xattr not kept as written: %v", f.Xattrs)
	}
	if v, _ := f.Xattr("user.k=v"); string(v) != "va=l" {
		t.Errorf("escaped xattr: %v", f.Xattrs)
	}
	e := root.Lookup("d/e")
	if e.Payload != "ab/cdef" || len(e.Digest) != 32 || e.Digest[0] != 0xab || e.Rdev != 0 || e.Size != 10 {
		t.Errorf("d/e: %+v", e)
	}
	if l := root.Lookup("l"); l.Target != "/target" || l.Size != 7 {
		t.Errorf("l: %+v", l)
	}
	if c := root.Lookup("c"); c.Rdev != 1234 || c.Size != 0 {
		t.Errorf("c: %+v", c)
	}
	if b := root.Lookup("b"); b.Rdev != 1 {
		t.Errorf("b: rdev %d, want truncation to 1", b.Rdev)
	}
	if z := root.Lookup("z"); z.Payload != "" {
		t.Errorf("z: empty file keeps payload %q", z.Payload)
	}
	if h := root.Lookup("h1"); h.LinkTo != e {
		t.Errorf("h1 links to %v", h.LinkTo)
	}
	if h := root.Lookup("h2"); h.LinkTo != e {
		t.Errorf("h2 (link to a link) links to %v, want the inode /d/e", h.LinkTo)
	}
	if n := root.Lookup("n"); n.Mode != 0o100644 {
		t.Errorf("n: mode %o, want the low 16 bits", n.Mode)
	}
	if _, err := BuildImage(root, DefaultWriteOptions()); err != nil {
		t.Errorf("BuildImage: %v", err)
	}
}

// TestParseDumpUnsorted: entries may come in any order (parents first);
// the tree comes out sorted, with hardlinks resolved.
func TestParseDumpUnsorted(t *testing.T) {
	dump := "/ 4096 40755 2 0 0 0 0.0\n" +
		"/z 0 100644 1 0 0 0 0.0\n" +
		"/d 4096 40755 2 0 0 0 0.0\n" +
		"/d/y 0 @100644 1 0 0 0 0.0 //a//f\n" +
		"/a 4096 40755 2 0 0 0 0.0\n" +
		"/d/b 0 100644 1 0 0 0 0.0\n" +
		"/a/f 0 100644 2 0 0 0 0.0\n" +
		"/d/a 0 100644 1 0 0 0 0.0\n"
	root, err := parseString(t, dump, true)
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	_ = root.Walk(func(n *tree.Node) error { paths = append(paths, n.Path()); return nil })
	if got, want := strings.Join(paths, " "), "/ /a /a/f /d /d/a /d/b /d/y /z"; got != want {
		t.Errorf("walk %s, want %s", got, want)
	}
	if y := root.Lookup("d/y"); y.LinkTo != root.Lookup("a/f") {
		t.Errorf("d/y links to %v", y.LinkTo)
	}
}

func TestStrtoull(t *testing.T) {
	for _, c := range []struct {
		s    string
		base uint64
		want uint64
		ok   bool
	}{
		{"0", 10, 0, true},
		{"18446744073709551615", 10, 1<<64 - 1, true},
		{"18446744073709551616", 10, 1<<64 - 1, true},
		{"99999999999999999999999", 10, 1<<64 - 1, true},
		{"-1", 10, 1<<64 - 1, true},
		{"-99999999999999999999999", 10, 1<<64 - 1, true},
		{"+5", 10, 5, true},
		{" \t5", 10, 5, true},
		{"5 ", 10, 0, false},
		{"", 10, 0, false},
		{"-", 10, 0, false},
		{"0x10", 10, 0, false},
		{"777", 8, 0o777, true},
		{"8", 8, 0, false},
		{"1777777777777777777777", 8, 1<<64 - 1, true},
		{"2000000000000000000000", 8, 1<<64 - 1, true},
	} {
		got, ok := strtoull(c.s, c.base)
		if got != c.want || ok != c.ok {
			t.Errorf("strtoull(%q, %d) = %d, %v; want %d, %v", c.s, c.base, got, ok, c.want, c.ok)
		}
	}
}

// TestParseDumpManyXattrs: a line with many xattrs (the sort switches
// algorithms) keeps the last value of a repeated name.
func TestParseDumpManyXattrs(t *testing.T) {
	var line strings.Builder
	line.WriteString("/ 4096 40755 2 0 0 0 0.0 - - -")
	for i := 30; i > 0; i-- {
		fmt.Fprintf(&line, " user.k%02d=a%d", i%20, i)
	}
	root, err := parseString(t, line.String()+"\n", true)
	if err != nil {
		t.Fatal(err)
	}
	if len(root.Xattrs) != 20 {
		t.Fatalf("%d xattrs, want 20", len(root.Xattrs))
	}
	for i, x := range root.Xattrs {
		if want := fmt.Sprintf("user.k%02d", i); x.Name != want {
			t.Errorf("xattr %d is %s, want %s", i, x.Name, want)
		}
	}
	if v, _ := root.Xattr("user.k05"); string(v) != "a5" {
		t.Errorf("user.k05 = %q, want the later a5", v)
	}
	// The writer sorts and deduplicates the same way when a tree repeats names.
	root.Xattrs = append(root.Xattrs, tree.Xattr{Name: "user.k05", Value: []byte("a5")}, tree.Xattr{Name: "user.a", Value: []byte("x")})
	img1, err := BuildImage(root, DefaultWriteOptions())
	if err != nil {
		t.Fatal(err)
	}
	root.Xattrs = root.Xattrs[:len(root.Xattrs)-2]
	root.SetXattr("user.a", []byte("x"))
	img2, err := BuildImage(root, DefaultWriteOptions())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(img1, img2) {
		t.Errorf("unsorted xattrs with a repeated name give another image: %s", diffImages(img1, img2))
	}
}

// TestParseDumpXattrEquals: the first literal '=' splits KEY=VALUE; an
// escaped one belongs to the key, and an empty value is written KEY=.
func TestParseDumpXattrEquals(t *testing.T) {
	root, err := parseString(t, "/ 4096 40755 2 0 0 0 0.0 - - - user.empty= user.k\\x3dx=v=w\n", true)
	if err != nil {
		t.Fatal(err)
	}
	want := []tree.Xattr{{Name: "user.empty", Value: []byte{}}, {Name: "user.k=x", Value: []byte("v=w")}}
	if len(root.Xattrs) != 2 || root.Xattrs[0].Name != want[0].Name || len(root.Xattrs[0].Value) != 0 ||
		root.Xattrs[1].Name != want[1].Name || string(root.Xattrs[1].Value) != "v=w" {
		t.Errorf("xattrs %q, want %q", root.Xattrs, want)
	}
}
