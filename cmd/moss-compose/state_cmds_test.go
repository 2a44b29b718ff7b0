package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/mossfs/mossfs/internal/gentree"
	"github.com/mossfs/mossfs/internal/hugeheap"
	"github.com/mossfs/mossfs/internal/state"
	"github.com/mossfs/mossfs/internal/testenv"
	"golang.org/x/sys/unix"
)

var (
	mcOnce sync.Once
	mcBin  string
	mcErr  error
)

// TestMain runs the tests, then removes the moss-compose they built (each
// run left a moss-compose-test-* in /tmp).
func TestMain(m *testing.M) {
	code := m.Run()
	if mcBin != "" {
		os.RemoveAll(filepath.Dir(mcBin))
	}
	os.Exit(code)
}

// mossCompose builds the command once per test binary.
func mossCompose(t *testing.T) string {
	t.Helper()
	mcOnce.Do(func() {
		dir, err := os.MkdirTemp("", "moss-compose-test-")
		if err != nil {
			mcErr = err
			return
		}
		mcBin = filepath.Join(dir, "moss-compose")
		cmd := exec.Command("go", "build", "-o", mcBin, ".")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			mcErr = &buildError{err: err, out: string(out)}
		}
	})
	if mcErr != nil {
		t.Fatal(mcErr)
	}
	return mcBin
}

type buildError struct {
	err error
	out string
}

func (e *buildError) Error() string { return "go build: " + e.err.Error() + "\n" + e.out }

// mc runs moss-compose and returns stdout; it fails the test if the exit
// status is not what wantOK says.
func mc(t *testing.T, wantOK bool, args ...string) string {
	t.Helper()
	cmd := exec.Command(mossCompose(t), args...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if (err == nil) != wantOK {
		t.Fatalf("moss-compose %s: err %v, want ok=%v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, wantOK, stdout.String(), stderr.String())
	}
	if !wantOK {
		return stderr.String()
	}
	return stdout.String()
}

func mcJSON(t *testing.T, v any, args ...string) {
	t.Helper()
	out := mc(t, true, append(args, "--json")...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("moss-compose %s --json: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func TestStateCommands(t *testing.T) {
	stones := testenv.SharedPath(t, "testdata", "stones")
	root := filepath.Join(t.TempDir(), "moss")
	r := []string{"--root", root}
	cmd := func(args ...string) []string { return append(args, r...) }

	// Compose from stones: ids 1, 2.
	if out := mc(t, true, cmd("compose", "-q", "--stone", filepath.Join(stones, "bash-completion-2.11-1-1-x86_64.stone"))...); out != "1\n" {
		t.Fatalf("first compose printed %q", out)
	}
	if out := mc(t, true, cmd("compose", "-q", "--from", "1", "--stone", filepath.Join(stones, "pineapple-1-1-1-x86_64.stone"))...); out != "2\n" {
		t.Fatalf("second compose printed %q", out)
	}
	// italian-pizza declares a conflict with pineapple: refused, nothing written.
	errOut := mc(t, false, cmd("compose", "-q", "--from", "2", "--stone", filepath.Join(stones, "italian-pizza-1-1-1-x86_64.stone"))...)
	if !strings.Contains(errOut, "italian-pizza") || !strings.Contains(errOut, "pineapple") {
		t.Errorf("conflict message: %s", errOut)
	}
	// A tree whose file differs from bash-completion's: refused before any
	// of its content is stored.
	clash := filepath.Join(t.TempDir(), "clash")
	os.MkdirAll(filepath.Join(clash, "completions"), 0o755)
	os.WriteFile(filepath.Join(clash, "completions", "7z"), []byte(strings.Repeat("not the 7z completion\n", 20)), 0o644)
	objectsBefore := countFiles(t, filepath.Join(root, "cas", "objects"))
	errOut = mc(t, false, cmd("compose", "-q", "--from", "2", "--tree", clash+":share/bash-completion")...)
	if !strings.Contains(errOut, "/share/bash-completion/completions/7z") || !strings.Contains(errOut, "content") {
		t.Errorf("tree conflict message: %s", errOut)
	}
	if n := countFiles(t, filepath.Join(root, "cas", "objects")); n != objectsBefore {
		t.Errorf("a refused tree left %d objects in the store (had %d)", n, objectsBefore)
	}
	// A tree at a prefix.
	extra := filepath.Join(t.TempDir(), "extra")
	os.MkdirAll(filepath.Join(extra, "sub"), 0o755)
	os.WriteFile(filepath.Join(extra, "sub", "hello.txt"), []byte(strings.Repeat("hello\n", 50)), 0o644)
	os.WriteFile(filepath.Join(extra, "small"), []byte("x"), 0o644)
	var composed struct {
		Transaction state.Transaction `json:"transaction"`
		ImagePath   string            `json:"image_path"`
	}
	mcJSON(t, &composed, cmd("compose", "--from", "2", "--tree", extra+":/share/extra")...)
	if composed.Transaction.ID != 3 || composed.Transaction.Parent != 2 || len(composed.Transaction.Inputs) != 3 {
		t.Fatalf("compose --json: %+v", composed)
	}

	var list []struct {
		state.Transaction
		Active bool `json:"active"`
	}
	mcJSON(t, &list, cmd("state", "list")...)
	if len(list) != 3 || list[2].ID != 3 {
		t.Fatalf("state list: %+v", list)
	}
	if out := mc(t, true, cmd("state", "list")...); !strings.Contains(out, "pineapple-1-1-1") {
		t.Errorf("state list:\n%s", out)
	}

	// The image carries .stateID and the stones' paths at its root.
	s, err := state.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	tx3, err := s.Get(3)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := s.Tree(tx3)
	if err != nil {
		t.Fatal(err)
	}
	if n := tr.Lookup(".stateID"); n == nil || string(n.Content) != "3" {
		t.Errorf(".stateID = %+v", n)
	}
	for _, p := range []string{"share/bash-completion/completions/7z", "share/defaults/pienapple", "share/extra/sub/hello.txt", "share/extra/small"} {
		if tr.Lookup(p) == nil {
			t.Errorf("%s missing from the image of 3", p)
		}
	}

	var owners struct {
		Owners []state.Input `json:"owners"`
	}
	mcJSON(t, &owners, cmd("state", "show", "3", "--owner", "/usr/share/defaults/pienapple")...)
	if len(owners.Owners) != 1 || owners.Owners[0].Name != "pineapple" {
		t.Errorf("owner: %+v", owners)
	}
	if out := mc(t, true, cmd("state", "show", "3")...); !strings.Contains(out, "sha256:"+tx3.Image) {
		t.Errorf("state show:\n%s", out)
	}

	var d state.Diff
	mcJSON(t, &d, cmd("state", "diff", "1", "3")...)
	if len(d.InputsAdded) != 2 || !slices.Contains(d.Added, "/share/extra/sub/hello.txt") || !slices.Contains(d.Added, "/share/defaults/pienapple") || len(d.Removed) != 0 {
		t.Errorf("diff 1 3: %+v", d)
	}

	// Re-importing the tree with a change replaces it (same directory and prefix).
	os.WriteFile(filepath.Join(extra, "small"), []byte("y"), 0o644)
	if out := mc(t, true, cmd("compose", "-q", "--from", "3", "--tree", extra+":/share/extra")...); out != "4\n" {
		t.Fatalf("compose 4 printed %q", out)
	}
	mcJSON(t, &d, cmd("state", "diff", "3", "4")...)
	if len(d.InputsChanged) != 1 || len(d.Changed) != 1 || d.Changed[0].Path != "/share/extra/small" {
		t.Errorf("diff 3 4: %+v", d)
	}
	// --remove of a package.
	if out := mc(t, true, cmd("compose", "-q", "--from", "4", "--remove", "pineapple")...); out != "5\n" {
		t.Fatalf("compose 5 printed %q", out)
	}
	mcJSON(t, &d, cmd("state", "diff", "4", "5")...)
	if len(d.InputsRemoved) != 1 || d.InputsRemoved[0].Name != "pineapple" || !slices.Contains(d.Removed, "/share/defaults/pienapple") {
		t.Errorf("diff 4 5: %+v", d)
	}

	// Protected transactions.
	os.WriteFile(filepath.Join(root, "active"), []byte("5\n"), 0o644)
	os.WriteFile(filepath.Join(root, "mounts", "usr.json"), []byte(`{"tx": 2, "target": "/usr", "image": "`+list[1].Image+`"}`), 0o644)
	errOut = mc(t, false, cmd("state", "remove", "2", "5")...)
	if !strings.Contains(errOut, "2 (mounted at /usr)") || !strings.Contains(errOut, "5 (active)") {
		t.Errorf("remove of protected: %s", errOut)
	}
	var rm struct {
		Removed []uint64        `json:"removed"`
		GC      *state.GCResult `json:"gc"`
	}
	mcJSON(t, &rm, cmd("state", "remove", "1", "3-4", "-q")...)
	if !slices.Equal(rm.Removed, []uint64{1, 3, 4}) || rm.GC == nil || len(rm.GC.ImagesRemoved) != 3 {
		t.Errorf("remove 1 3-4: %+v", rm)
	}
	mc(t, false, cmd("state", "remove", "9")...)
	// Ids without a range are checked by the removal itself (the
	// command lists no transactions): one unknown id removes nothing.
	errOut = mc(t, false, cmd("state", "remove", "2", "9", "--force", "--no-gc")...)
	if !strings.Contains(errOut, "transaction 9: no such transaction") {
		t.Errorf("remove 2 9: %s", errOut)
	}
	if _, err := os.Stat(filepath.Join(root, "transactions", "2.json")); err != nil {
		t.Errorf("remove 2 9 (9 unknown) removed 2: %v", err)
	}
	rm.GC = nil
	mcJSON(t, &rm, cmd("state", "remove", "2", "--force", "--no-gc")...)
	if rm.GC != nil {
		t.Errorf("--no-gc ran gc")
	}
	// gc keeps the mounted image (its record names it) after the forced removal.
	var g state.GCResult
	mcJSON(t, &g, cmd("gc", "--dry-run")...)
	if !slices.Contains(g.Images, list[1].Image) || len(g.ImagesRemoved) != 0 {
		t.Errorf("gc --dry-run: %+v", g)
	}

	// verify: clean, then with a corrupt object.
	var v state.VerifyResult
	mcJSON(t, &v, cmd("verify")...)
	if !v.OK() || v.Objects == 0 {
		t.Fatalf("verify: %+v", v)
	}
	n := tr.Lookup("share/extra/sub/hello.txt")
	obj := filepath.Join(s.Store().ObjectsDir(), n.Payload)
	os.Remove(obj)
	os.WriteFile(obj, []byte("tampered"), 0o644)
	errOut = mc(t, false, cmd("verify", "--tx", "5", "-q")...)
	if !strings.Contains(errOut, "1 corrupt object") {
		t.Errorf("verify of a corrupt object: %s", errOut)
	}
	if _, err := os.Stat(obj); !os.IsNotExist(err) {
		t.Errorf("corrupt object not quarantined")
	}
	errOut = mc(t, false, cmd("state", "verify", "5")...)
	if !strings.Contains(errOut, "1 missing object") {
		t.Errorf("state verify after quarantine: %s", errOut)
	}

	// import fills the store; the next gc removes what no transaction uses.
	var imp []struct {
		Name    string `json:"name"`
		Objects int    `json:"objects"`
	}
	mcJSON(t, &imp, cmd("import", "--stone", filepath.Join(stones, "bash-completion-2.11-1-1-x86_64.stone"))...)
	if len(imp) != 1 || imp[0].Name != "bash-completion" || imp[0].Objects != 474 {
		t.Errorf("import: %+v", imp)
	}

	// A pinned transaction is protected too.
	mc(t, true, cmd("state", "pin", "keep", "5")...)
	mc(t, false, cmd("state", "pin", "bad", "sha256:xyz")...)
	errOut = mc(t, false, cmd("state", "remove", "5")...)
	if !strings.Contains(errOut, "pinned") {
		t.Errorf("remove of a pinned transaction: %s", errOut)
	}
	mc(t, true, cmd("state", "unpin", "keep")...)

	// prune keeps the newest (and never the active one). Importing the
	// tree again restores the quarantined object.
	os.Remove(filepath.Join(root, "mounts", "usr.json"))
	mc(t, true, cmd("import", "-q", "--tree", extra)...)
	mc(t, true, cmd("verify", "-q")...)
	// Nothing changes: nothing created, 5 is the answer; --force composes.
	if out := mc(t, true, cmd("compose", "-q", "--from", "5")...); out != "5\n" {
		t.Errorf("no-change compose printed %q, want 5", out)
	}
	var unchanged struct {
		Unchanged bool `json:"unchanged"`
	}
	mcJSON(t, &unchanged, cmd("compose", "--from", "5", "--tree", extra+":/share/extra")...)
	if !unchanged.Unchanged {
		t.Error("re-adding the same tree at the same place: not reported unchanged")
	}
	mc(t, true, cmd("compose", "-q", "--from", "5", "--force")...)
	mc(t, true, cmd("compose", "-q", "--from", "5", "--force")...)
	mcJSON(t, &rm, cmd("state", "prune", "--keep", "1", "-q")...)
	if !slices.Equal(rm.Removed, []uint64{6}) {
		t.Errorf("prune --keep 1 removed %v", rm.Removed)
	}
	ids, _ := s.IDs()
	if !slices.Equal(ids, []uint64{5, 7}) {
		t.Errorf("after prune: %v", ids)
	}
}

func countFiles(t *testing.T, dir string) int {
	t.Helper()
	n := 0
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			n++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestComposeDumpAndXattrs: a dump written by our mkcomposefs mode (image,
// then info dump) joins a transaction at a prefix with its contents taken
// from the digest store; --xattrs keeps only the named namespaces of a tree.
func TestComposeDumpAndXattrs(t *testing.T) {
	tmp := t.TempDir()
	src := filepath.Join(tmp, "src")
	os.MkdirAll(filepath.Join(src, "lib"), 0o755)
	big := strings.Repeat("library bytes\n", 100)
	os.WriteFile(filepath.Join(src, "lib", "libx.so"), []byte(big), 0o644)
	if err := unix.Setxattr(filepath.Join(src, "lib", "libx.so"), "user.origin", []byte("test"), 0); err != nil {
		t.Skipf("user xattrs not supported here: %v", err)
	}
	digestStore := filepath.Join(tmp, "objects")
	img := filepath.Join(tmp, "x.cfs")
	mc(t, true, "mkcomposefs", "--digest-store="+digestStore, src, img)
	dump := filepath.Join(tmp, "x.dump")
	if err := os.WriteFile(dump, []byte(mc(t, true, "info", "dump", img)), 0o644); err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(tmp, "moss")
	// Without the digest store its contents are nowhere.
	if errOut := mc(t, false, "compose", "-q", "--root", root, "--dump", dump+":opt/x"); !strings.Contains(errOut, "/lib/libx.so") {
		t.Errorf("missing objects: %s", errOut)
	}
	if out := mc(t, true, "compose", "-q", "--root", root, "--dump", dump+":opt/x", "--objects", digestStore); out != "1\n" {
		t.Fatalf("compose --dump printed %q", out)
	}
	mc(t, true, "compose", "-q", "--root", root, "--from", "1", "--tree", src+":keep")
	mc(t, true, "compose", "-q", "--root", root, "--from", "2", "--tree", src+":drop", "--xattrs", "security")
	s, err := state.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	tx, err := s.Get(3)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := s.Tree(tx)
	if err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]bool{"opt/x/lib/libx.so": true, "keep/lib/libx.so": true, "drop/lib/libx.so": false} {
		n := tr.Lookup(p)
		if n == nil {
			t.Fatalf("%s missing from transaction 3", p)
		}
		if _, ok := n.Xattr("user.origin"); ok != want {
			t.Errorf("%s: user.origin present %v, want %v", p, ok, want)
		}
	}
	mc(t, true, "state", "verify", "--root", root)
}

// TestComposeLargeBaseHugeHeap: a compose on a base large enough that its
// heap is made ready in huge pages first (composeHugeHeap: from ~8k
// entries, with the collector off) writes the image that the same compose
// with the collector on (GOGC set: no huge-page heap) writes.
func TestComposeLargeBaseHugeHeap(t *testing.T) {
	spec := gentree.Spec{Dirs: 300, Files: 9000, Symlinks: 200, TotalBytes: 1 << 20, Seed: 4}
	if spec.Entries()*composeHeapPerEntry < hugeheap.MinSize {
		t.Fatalf("%d entries are too few for hugeheap.Grow", spec.Entries())
	}
	dir := t.TempDir()
	tree, small := filepath.Join(dir, "tree"), filepath.Join(dir, "small")
	os.Mkdir(tree, 0o755)
	if _, err := gentree.Materialize(tree, spec); err != nil {
		t.Fatal(err)
	}
	os.Mkdir(small, 0o755)
	if err := os.WriteFile(filepath.Join(small, "new-file"), []byte("one new file\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(dir, "state")
	var res struct {
		Tx struct {
			ID    uint64 `json:"id"`
			Image string `json:"image"`
		} `json:"transaction"`
	}
	mcJSON(t, &res, "compose", "--root", root, "--skip-triggers", "--tree", tree)
	images := map[string]string{}
	for _, env := range []string{"", "GOGC=100"} {
		// The same id both times (the image holds it, as /usr/.stateID).
		mc(t, true, "state", "remove", "--root", root, "-q", "2-100") // and gc: the id is free again
		cmd := exec.Command(mossCompose(t), "compose", "--root", root, "--skip-triggers", "--from", "1", "--id", "100", "--tree", small+":/opt/x", "--json")
		cmd.Env = append(os.Environ(), "SOURCE_DATE_EPOCH=1700000000", "GOGC=", "GOMEMLIMIT=")
		if env != "" {
			cmd.Env = append(cmd.Env, env)
		} else {
			// The runtime's trace of collections shows Grow's: a
			// forced one of a heap of at least hugeheap.MinSize.
			cmd.Env = append(cmd.Env, "GODEBUG=gctrace=1")
		}
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("compose --from 1 (%q): %v\n%s", env, err, stderr.String())
		}
		if env == "" && !grewHeap(stderr.String()) {
			t.Errorf("compose --from a %d-entry base ran no collection of a grown heap (hugeheap.Grow):\n%s", spec.Entries(), stderr.String())
		}
		if err := json.Unmarshal(out, &res); err != nil || res.Tx.Image == "" {
			t.Fatalf("compose --from 1 (%q) --json: %v\n%s", env, err, out)
		}
		images[env] = res.Tx.Image
	}
	if images[""] != images["GOGC=100"] {
		t.Errorf("compose --from a %d-entry base: image %s with the huge-page heap, %s with the collector on", spec.Entries(), images[""], images["GOGC=100"])
	}
}

// grewHeap reports whether a gctrace (GODEBUG=gctrace=1) shows a forced
// collection that began with at least hugeheap.MinSize of heap.
func grewHeap(trace string) bool {
	re := regexp.MustCompile(`, (\d+)->\d+->\d+ MB, .*\(forced\)`)
	for _, m := range re.FindAllStringSubmatch(trace, -1) {
		if n, err := strconv.Atoi(m[1]); err == nil && n<<20 >= hugeheap.MinSize {
			return true
		}
	}
	return false
}
