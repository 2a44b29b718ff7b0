package erofs

import (
	"bytes"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/mossfs/mossfs/internal/testenv"
	"github.com/mossfs/mossfs/tree"
)

// TestDumpGolden prints every golden image and compares with its source
// dump. The dumps of upstream's test suite that composefs-info printed itself
// are canonical and must come back byte for byte; for the others the
// differences are the ones mkcomposefs makes on writing (recomputed sizes,
// nlink, rdev, mode truncated to 16 bits, final newline) and the v1 opaque
// markers libcomposefs's loader gives back.
func TestDumpGolden(t *testing.T) {
	fix := map[string][][2]string{
		"bigfile-xattr.dump":              nil,
		"bigfile.dump":                    nil,
		"honggfuzz-bigfile-with-acl.dump": nil,
		"honggfuzz-long-symlink.dump":     nil,
		"special.dump":                    nil,
		"honggfuzz-chardev-nonzero-size.dump": {
			{"/ 4096 40755 2 0 0 0 0.0 - - -\n", "/ 4096 40755 2 0 0 0 0.0 - - - trusted.overlay.opaque=x user.overlay.opaque=x\n"},
			{"/chardev 1 ", "/chardev 0 "},
		},
		"honggfuzz-longlink-unterminated.dump": {
			{"/chardev 0 20720777 ", "/chardev 4095 120777 "},
			{"aaaa\n", "aaaa - -\n"}, // omitted trailing fields
		},
		"longlink.dump": {
			{"/big-but-not-max-link 5 ", "/big-but-not-max-link 4070 "},
			{"/max-link 5 ", "/max-link 4095 "},
		},
		"no-newline.dump": {{"40555 222 0 0 10 ", "40555 2 0 0 0 "}},
		"special_v1.dump": {{"trusted.foo1=bar-1 user.foo2=bar-2\n", "trusted.foo1=bar-1 trusted.overlay.opaque=x user.foo2=bar-2 user.overlay.opaque=x\n"}},
	}
	for name, b := range rdGoldens(t) {
		fixes, ok := fix[name]
		if !ok {
			t.Errorf("%s: no expectation", name)
			continue
		}
		src, err := os.ReadFile(testenv.SharedPath(t, "testdata", "composefs", name))
		if err != nil {
			t.Fatal(err)
		}
		want := string(src)
		if !strings.HasSuffix(want, "\n") {
			want += "\n"
		}
		for _, f := range fixes {
			if !strings.Contains(want, f[0]) {
				t.Fatalf("%s: fix %q does not apply", name, f[0])
			}
			want = strings.Replace(want, f[0], f[1], 1)
		}
		var got bytes.Buffer
		if err := rdOpen(t, b).WriteDump(&got); err != nil {
			t.Fatal(err)
		}
		if got.String() != want {
			t.Errorf("%s: dump differs:\n%s", name, rdDiff(want, got.String()))
		}
	}
}

func rdDiff(want, got string) string {
	wl, gl := strings.Split(want, "\n"), strings.Split(got, "\n")
	for i := range max(len(wl), len(gl)) {
		var w, g string
		if i < len(wl) {
			w = wl[i]
		}
		if i < len(gl) {
			g = gl[i]
		}
		if w != g {
			return "line " + strconv.Itoa(i+1) + ":\nwant " + rdTrunc(w) + "\ngot  " + rdTrunc(g)
		}
	}
	return ""
}

func rdTrunc(s string) string {
	if len(s) > 200 {
		return s[:200] + "…"
	}
	return s
}

// TestDumpTreeOrder checks that WriteDump of a tree prints xattrs sorted,
// while the image printer keeps composefs-info's inline-then-shared order.
func TestDumpTreeOrder(t *testing.T) {
	img := rdOpen(t, rdGoldens(t)["special.dump"])
	var b bytes.Buffer
	if err := WriteDump(&b, rdTree(t, img)); err != nil {
		t.Fatal(err)
	}
	want := `/escaped-xattr 0 100777 1 0 0 0 1633950376.0 - - - trusted.overlay.redirect=/foo\n user.foo=bar-2 user.overlay.redirect=/foo\n` + "\n"
	if !strings.Contains(b.String(), want) {
		t.Errorf("sorted xattrs: want line %q in\n%s", want, b.String())
	}
}

// TestDumpEscaping covers §1.1 and hardlink lines.
func TestDumpEscaping(t *testing.T) {
	root := tree.NewDir("", 0o755)
	root.Size = 4096
	root.Mtime = tree.Timespec{Sec: -5, Nsec: 7}
	f := &tree.Node{Name: "a b=c\\\t", Mode: tree.TypeReg | 0o644, Nlink: 2, UID: 1, GID: 2, Size: 1, Content: []byte("-"),
		Xattrs: []tree.Xattr{{Name: "user.k=1", Value: []byte("v=\x00\xff -")}}}
	root.AddChild(f)
	ext := &tree.Node{Name: "ext", Mode: tree.TypeReg | 0o600, Nlink: 1, Size: 10, Payload: "-", Digest: bytes.Repeat([]byte{0xab}, 32)}
	root.AddChild(ext)
	link := &tree.Node{Name: "hl", LinkTo: f}
	root.AddChild(link)
	sub := tree.NewDir("-d", 0o700)
	root.AddChild(sub)
	sub.AddChild(&tree.Node{Name: "s", Mode: tree.TypeLink | 0o777, Nlink: 1, Size: 3, Target: "x y"})
	sub.AddChild(&tree.Node{Name: "dev", Mode: tree.TypeChar | 0o600, Nlink: 1, Rdev: 259})
	var b bytes.Buffer
	if err := WriteDump(&b, root); err != nil {
		t.Fatal(err)
	}
	want := `/ 4096 40755 2 0 0 0 -5.7 - - -
/-d 0 40700 2 0 0 0 0.0 - - -
/-d/dev 0 20600 1 0 0 259 0.0 - - -
/-d/s 3 120777 1 0 0 0 0.0 x\x20y - -
/a\x20b=c\\\t 1 100644 2 1 2 0 0.0 - \x2d - user.k\x3d1=v\x3d\x00\xff\x20-
/ext 10 100600 1 0 0 0 0.0 \x2d - abababababababababababababababababababababababababababababababab
/hl 1 @100644 2 1 2 0 0.0 /a\x20b=c\\\t \x2d - user.k\x3d1=v\x3d\x00\xff\x20-
`
	if b.String() != want {
		t.Errorf("dump:\n%s\nwant:\n%s", b.String(), want)
	}
	if len(root.Children) != 4 || root.Children[0].Name != "a b=c\\\t" {
		t.Error("WriteDump reordered its input")
	}
}

func TestWriteListing(t *testing.T) {
	root := tree.NewDir("", 0o755)
	d := tree.NewDir("a dir", 0o755)
	root.AddChild(d)
	f := &tree.Node{Name: "f", Mode: tree.TypeReg | 0o644, Size: 3, Payload: "ab/cd"}
	d.AddChild(f)
	d.AddChild(&tree.Node{Name: "l", Mode: tree.TypeLink | 0o777, Target: "x\ty"})
	root.AddChild(&tree.Node{Name: "h\n", LinkTo: f})
	root.AddChild(&tree.Node{Name: "in", Mode: tree.TypeReg | 0o644, Size: 1, Content: []byte("x")})
	var b bytes.Buffer
	if err := WriteListing(&b, root); err != nil {
		t.Fatal(err)
	}
	want := "/a dir/\t\n/a dir/f\t@ ab/cd\n/a dir/l\t-> x\\ty\n/h\\n\n/in\n"
	if b.String() != want {
		t.Errorf("listing %q, want %q", b.String(), want)
	}
}
