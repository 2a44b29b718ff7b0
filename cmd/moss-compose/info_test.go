package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/mossfs/mossfs/erofs"
	"github.com/mossfs/mossfs/internal/testenv"
	"github.com/mossfs/mossfs/tree"
)

func runMC(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	cmd := exec.Command(mossCompose(t), args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return out.String(), errb.String(), err
}

// infoTestImage writes an image with external files (two share an object)
// and a hardlink.
func infoTestImage(t *testing.T) (string, *tree.Node) {
	root := tree.NewDir("", 0o755)
	ext := func(name, payload string) *tree.Node {
		return &tree.Node{Name: name, Mode: tree.TypeReg | 0o644, Nlink: 1, Size: 10, Payload: payload, Digest: bytes.Repeat([]byte{payload[0]}, 32)}
	}
	a := ext("a", "bb/"+strings.Repeat("b", 62))
	a.Nlink = 2
	root.AddChild(a)
	root.AddChild(ext("b", "aa/"+strings.Repeat("a", 62)))
	root.AddChild(ext("c c", "aa/"+strings.Repeat("a", 62)))
	root.AddChild(&tree.Node{Name: "h", LinkTo: a})
	root.AddChild(&tree.Node{Name: "l", Mode: tree.TypeLink | 0o777, Nlink: 1, Size: 1, Target: "a"})
	root.Sort()
	img, err := erofs.BuildImage(root, erofs.DefaultWriteOptions())
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "img.cfs")
	if err := os.WriteFile(p, img, 0o644); err != nil {
		t.Fatal(err)
	}
	return p, root
}

func TestInfoObjects(t *testing.T) {
	img, _ := infoTestImage(t)
	out, _, err := runMC(t, "info", "objects", img, img)
	if err != nil {
		t.Fatal(err)
	}
	wantA, wantB := "aa/"+strings.Repeat("a", 62), "bb/"+strings.Repeat("b", 62)
	if out != wantA+"\n"+wantB+"\n" {
		t.Errorf("objects: %q", out)
	}
	base := t.TempDir()
	os.MkdirAll(filepath.Join(base, "aa"), 0o755)
	os.WriteFile(filepath.Join(base, wantA), []byte("0123456789"), 0o644)
	out, _, err = runMC(t, "info", "missing-objects", "--basedir", base, "--json", img)
	if err != nil {
		t.Fatal(err)
	}
	var missing []string
	if err := json.Unmarshal([]byte(out), &missing); err != nil || !slices.Equal(missing, []string{wantB}) {
		t.Errorf("missing-objects --json: %q (%v)", out, err)
	}
	if _, errOut, err := runMC(t, "info", "missing-objects", img); err == nil || !strings.Contains(errOut, "--basedir") {
		t.Errorf("missing-objects without --basedir: %v %q", err, errOut)
	}
}

func TestInfoLsDump(t *testing.T) {
	img, _ := infoTestImage(t)
	out, _, err := runMC(t, "info", "ls", img)
	if err != nil {
		t.Fatal(err)
	}
	want := "/a\t@ bb/" + strings.Repeat("b", 62) + "\n/b\t@ aa/" + strings.Repeat("a", 62) + "\n/c c\t@ aa/" + strings.Repeat("a", 62) + "\n/h\n/l\t-> a\n"
	if out != want {
		t.Errorf("ls:\n%s\nwant:\n%s", out, want)
	}
	out, _, err = runMC(t, "info", "ls", "--json", img)
	if err != nil {
		t.Fatal(err)
	}
	var ls []struct {
		Image   string
		Entries []struct{ Path, Type, Payload, Hardlink, Target string }
	}
	if err := json.Unmarshal([]byte(out), &ls); err != nil || len(ls) != 1 || len(ls[0].Entries) != 5 || ls[0].Entries[3].Hardlink != "/a" {
		t.Errorf("ls --json: %s (%v)", out, err)
	}
	out, _, err = runMC(t, "info", "dump", img)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	im, err := erofs.Open(f)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := im.WriteDump(&b); err != nil {
		t.Fatal(err)
	}
	if out != b.String() || !strings.Contains(out, "/h 10 @100644 2 0 0 0 0.0 /a - ") {
		t.Errorf("dump:\n%s", out)
	}
	// The canonical golden dump comes back byte for byte.
	golden := testenv.SharedPath(t, "testdata", "composefs", "golden-images", "special.dump.cfs")
	out, _, err = runMC(t, "info", "dump", golden)
	src, _ := os.ReadFile(testenv.SharedPath(t, "testdata", "composefs", "special.dump"))
	if err != nil || out != string(src) {
		t.Errorf("dump of special.dump's image differs from special.dump (%v)", err)
	}
}

func TestInfoErrors(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "not-an-image")
	os.WriteFile(bad, bytes.Repeat([]byte{1}, 8192), 0o644)
	for _, sub := range []string{"ls", "dump", "objects"} {
		_, errOut, err := runMC(t, "info", sub, bad)
		if err == nil || !strings.Contains(errOut, bad) || !strings.Contains(errOut, "magic") {
			t.Errorf("info %s on garbage: %v %q", sub, err, errOut)
		}
	}
}

func TestInfoMeasureFile(t *testing.T) {
	dir := t.TempDir()
	p1, p2 := filepath.Join(dir, "hello"), filepath.Join(dir, "empty")
	os.WriteFile(p1, []byte("hello world\n"), 0o644)
	os.WriteFile(p2, nil, 0o644)
	out, _, err := runMC(t, "info", "measure-file", p1, p2)
	if err != nil {
		t.Fatal(err)
	}
	// Vectors from composefs-format.md §13.
	want := "37061ef2ac4c21bec68489b56138c5780306a4ad7fe6676236ecdf2c9027cd92\n3d248ca542a24fc62d1c43b916eae5016878e2533c88238480b26128a1f1af95\n"
	if out != want {
		t.Errorf("measure-file: %q", out)
	}
	if _, errOut, err := runMC(t, "info", "measure-file", filepath.Join(dir, "nope")); err == nil || !strings.Contains(errOut, "nope") {
		t.Errorf("measure-file of a missing file: %v %q", err, errOut)
	}
}
