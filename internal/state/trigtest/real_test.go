package trigtest

import (
	"bytes"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/mossfs/mossfs/internal/state"
	"github.com/mossfs/mossfs/internal/testenv"
	"github.com/mossfs/mossfs/kvmtests/vm"
	"github.com/mossfs/mossfs/tree"
)

// The real triggers of AerynOS's recipes (reference: triggers.md), with
// their commands mapped to Debian 12's paths.
var realTriggers = map[string]string{
	"share/moss/triggers/tx.d/kmod.yaml": `name: depmod
description: Update kernel module dependencies
handlers:
  depmod:
    run: /usr/sbin/depmod
    args: ["-a", "$(version)"]
paths:
  "/usr/lib/modules/(version:*)/*":
    handlers: [depmod]
    type: directory
`,
	"share/moss/triggers/tx.d/glib2.yaml": `name: glib2
description: Compile GSettings schemas
handlers:
  schemas:
    run: /usr/bin/glib-compile-schemas
    args: ["/usr/share/glib-2.0/schemas"]
paths:
  "/usr/share/glib-2.0/schemas/*":
    handlers: [schemas]
`,
	"share/moss/triggers/tx.d/shared_mime_info.yaml": `name: mimedb
description: Update the shared MIME database
handlers:
  mimedb:
    run: /usr/bin/update-mime-database
    args: ["-n", "/usr/share/mime"]
paths:
  "/usr/share/mime/*":
    handlers: [mimedb]
`,
}

func schema(id, def string) map[string]string {
	return map[string]string{"share/glib-2.0/schemas/" + id + ".gschema.xml": `<?xml version="1.0" encoding="UTF-8"?>
<schemalist>
  <schema id="` + id + `" path="/org/mossfs/` + id + `/">
    <key name="greeting" type="s"><default>'` + def + `'</default></key>
    <key name="count" type="i"><default>42</default></key>
  </schema>
</schemalist>
`}
}

// kernel returns the release and module directory of the Debian 6.12
// kernel the VM tests fetch (cached under kvmtests/.cache).
func kernel(t *testing.T) *vm.Kernel {
	t.Helper()
	repo := filepath.Dir(filepath.Dir(filepath.Dir(mustWd(t))))
	k, err := vm.FetchKernel(filepath.Join(repo, "kvmtests", ".cache"), vm.DefaultMeta, vm.DefaultModules)
	if err != nil {
		t.Fatalf("the VM tests' kernel: %v", err)
	}
	return k
}

func mustWd(t *testing.T) string {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	return wd
}

// moduleTree lays out modules as a kernel package does.
func moduleTree(t *testing.T, k *vm.Kernel, where map[string]string) string {
	t.Helper()
	d := tmpDir(t)
	for mod, sub := range where {
		data, err := os.ReadFile(filepath.Join(k.ModuleDir, mod+".ko"))
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(d, "lib/modules", k.Release, "kernel", sub, mod+".ko")
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

func recordsByName(tx *state.Transaction) map[string]state.TriggerRecord {
	m := map[string]state.TriggerRecord{}
	for _, r := range tx.Triggers {
		m[r.Name] = r
	}
	return m
}

func ran(tx *state.Transaction) []string {
	var out []string
	for _, r := range tx.Triggers {
		if r.Ran {
			out = append(out, r.Name)
		}
	}
	return out
}

// TestRealTriggers composes a /usr of the host's kmod, glib and
// shared-mime-info with the real triggers, then checks the outputs against
// the programs' own run in a chroot, the modules against modprobe, and the
// skip rule over three transactions (A, B, C).
func TestRealTriggers(t *testing.T) {
	requireRoot(t)
	k := kernel(t)
	usr := hostUsr(t)
	s := newState(t)
	base := importTree(t, s, usr)
	trigDir := writeTree(t, realTriggers)
	trig := importTree(t, s, trigDir)
	schemaDir := writeTree(t, schema("org.mossfs.Test", "hello"))
	schemas := importTree(t, s, schemaDir)
	modTree := moduleTree(t, k, map[string]string{"erofs": "fs/erofs", "libcrc32c": "lib", "overlay": "fs/overlayfs"})
	mods := importTree(t, s, modTree)

	// A: every trigger runs.
	resA, err := s.Compose(state.ComposeOptions{Add: []state.Fragment{base, trig, schemas, mods}, Time: epoch})
	if err != nil {
		t.Fatal(err)
	}
	a := resA.Tx
	if got, want := ran(a), []string{"mimedb", "glib2", "depmod"}; !slices.Equal(got, want) {
		t.Fatalf("A ran %v, want %v (moss's order: reverse alphabetical)", got, want)
	}
	// Reproducible: the same inputs composed in another state root give
	// the same image, trigger outputs included.
	s2 := newState(t)
	resA2, err := s2.Compose(state.ComposeOptions{Add: []state.Fragment{importTree(t, s2, usr), importTree(t, s2, trigDir),
		importTree(t, s2, schemaDir), importTree(t, s2, modTree)}, Time: epoch})
	if err != nil {
		t.Fatal(err)
	}
	if resA2.Tx.Image != a.Image {
		d, _ := s2.Tree(resA2.Tx)
		r, _ := s.Tree(a)
		var diff state.Diff
		state.DiffTrees(r, d, &diff)
		t.Errorf("the same inputs composed twice give images %s and %s: %+v", a.Image, resA2.Tx.Image, diff)
	}
	rootA, err := s.Tree(a)
	if err != nil {
		t.Fatal(err)
	}
	modDir := "/lib/modules/" + k.Release
	dep := fileOf(t, s, rootA, modDir+"/modules.dep")
	if !bytes.Contains(dep, []byte("kernel/fs/erofs/erofs.ko: kernel/lib/libcrc32c.ko")) {
		t.Errorf("modules.dep lacks erofs → libcrc32c:\n%s", dep)
	}
	// Attribution and mtimes.
	recs := recordsByName(a)
	if !slices.Contains(recs["depmod"].Paths, "/usr"+modDir+"/modules.dep") {
		t.Errorf("depmod's record does not name modules.dep: %v", recs["depmod"].Paths)
	}
	if !slices.Contains(recs["glib2"].Paths, "/usr/share/glib-2.0/schemas/gschemas.compiled") {
		t.Errorf("glib2's record: %v", recs["glib2"].Paths)
	}
	if n := find(rootA, modDir+"/modules.dep"); n.Mtime.Sec != epoch.Unix() {
		t.Errorf("modules.dep mtime %d, want SOURCE_DATE_EPOCH %d", n.Mtime.Sec, epoch.Unix())
	}

	// modprobe on the mounted transaction resolves erofs and its dependency.
	mnt := mountTx(t, s, a)
	out, err := exec.Command("modprobe", "-n", "-d", mnt, "-S", k.Release, "--show-depends", "erofs").CombinedOutput()
	if err != nil {
		t.Fatalf("modprobe --show-depends erofs: %v: %s", err, out)
	}
	if want := "insmod " + mnt + modDir + "/kernel/lib/libcrc32c.ko \ninsmod " + mnt + modDir + "/kernel/fs/erofs/erofs.ko \n"; string(out) != want {
		t.Errorf("modprobe --show-depends erofs:\n%s\nwant:\n%s", out, want)
	}

	// The oracle: the same programs on a plain copy in a chroot.
	chroot := tmpDir(t)
	plainUsr := filepath.Join(chroot, "usr")
	for _, src := range []string{usr, schemaDir} {
		if out, err := exec.Command("cp", "-a", src+"/.", plainUsr+"/").CombinedOutput(); err != nil {
			t.Fatalf("cp: %v: %s", err, out)
		}
	}
	for _, l := range []string{"bin", "sbin", "lib", "lib64"} {
		os.Symlink("usr/"+l, filepath.Join(chroot, l))
	}
	for _, argv := range [][]string{{"/usr/bin/glib-compile-schemas", "/usr/share/glib-2.0/schemas"}, {"/usr/bin/update-mime-database", "-n", "/usr/share/mime"}} {
		cmd := exec.Command(argv[0], argv[1:]...)
		cmd.Env = []string{"PATH=" + state.TriggerPath, "LANG=C.UTF-8", "SOURCE_DATE_EPOCH=1700000000"}
		cmd.Dir = "/"
		cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: chroot}
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%v in a chroot: %v: %s", argv, err, out)
		}
	}
	if got, want := fileOf(t, s, rootA, "/share/glib-2.0/schemas/gschemas.compiled"), mustRead(t, filepath.Join(plainUsr, "share/glib-2.0/schemas/gschemas.compiled")); !bytes.Equal(got, want) {
		t.Errorf("gschemas.compiled differs from glib-compile-schemas run in a chroot (%d vs %d bytes)", len(got), len(want))
	}
	nMime := 0
	filepath.WalkDir(filepath.Join(plainUsr, "share/mime"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel := strings.TrimPrefix(p, plainUsr)
		if got, want := fileOf(t, s, rootA, rel), mustRead(t, p); !bytes.Equal(got, want) {
			t.Errorf("/usr%s differs from update-mime-database's in a chroot", rel)
		}
		nMime++
		return nil
	})
	if nMime < 100 {
		t.Errorf("the chroot's mime database has only %d files", nMime)
	}

	// B: a changed schema package matches glib2 only; the others are
	// carried over, and the image is the one a full re-run gives.
	os.WriteFile(filepath.Join(schemaDir, "share/glib-2.0/schemas/org.mossfs.Test.gschema.xml"),
		[]byte(schema("org.mossfs.Test", "changed")["share/glib-2.0/schemas/org.mossfs.Test.gschema.xml"]), 0o644)
	schemas2 := importTree(t, s, schemaDir)
	resB, err := s.Compose(state.ComposeOptions{From: a.ID, Add: []state.Fragment{schemas2}, Time: epoch})
	if err != nil {
		t.Fatal(err)
	}
	b := resB.Tx
	if got := ran(b); !slices.Equal(got, []string{"glib2"}) {
		t.Errorf("B ran %v, want [glib2]", got)
	}
	schemas3 := importTree(t, s, schemaDir)
	resFull, err := s.Compose(state.ComposeOptions{From: a.ID, Add: []state.Fragment{schemas3}, Time: epoch, Triggers: state.TriggerOptions{Rerun: true}})
	if err != nil {
		t.Fatal(err)
	}
	if got := ran(resFull.Tx); len(got) != 3 {
		t.Errorf("--rerun-triggers ran %v, want all three", got)
	}
	d, err := s.DiffTx(b.ID, resFull.Tx.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Added)+len(d.Removed)+len(d.Changed) != 0 {
		t.Errorf("B (carried over) and a full re-run differ: +%v -%v ~%v", d.Added, d.Removed, d.Changed)
	}
	if rootB, err := s.Tree(b); err != nil {
		t.Fatal(err)
	} else if bytes.Equal(fileOf(t, s, rootB, "/share/glib-2.0/schemas/gschemas.compiled"), fileOf(t, s, rootA, "/share/glib-2.0/schemas/gschemas.compiled")) {
		t.Error("B's compiled schemas are A's: glib2 did not see the change")
	}
	dAB, err := s.DiffTx(a.ID, b.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(changedPaths(dAB), "/share/glib-2.0/schemas/gschemas.compiled") {
		t.Errorf("state diff A B does not show gschemas.compiled changed: %v", dAB.Changed)
	}
	status := map[string]string{}
	for _, tc := range dAB.Triggers {
		status[tc.Name] = tc.Status
	}
	if status["glib2"] != "ran" || status["depmod"] != "carried over" || status["mimedb"] != "carried over" {
		t.Errorf("state diff A B triggers: %+v", dAB.Triggers)
	}

	// C: a module two directories below a matched directory: depmod again.
	loop := importTree(t, s, moduleTree(t, k, map[string]string{"loop": "drivers/block"}))
	resC, err := s.Compose(state.ComposeOptions{From: b.ID, Add: []state.Fragment{loop}, Time: epoch})
	if err != nil {
		t.Fatal(err)
	}
	if got := ran(resC.Tx); !slices.Equal(got, []string{"depmod"}) {
		t.Errorf("C ran %v, want [depmod]", got)
	}
	rootC, err := s.Tree(resC.Tx)
	if err != nil {
		t.Fatal(err)
	}
	if dep := fileOf(t, s, rootC, modDir+"/modules.dep"); !bytes.Contains(dep, []byte("kernel/drivers/block/loop.ko:")) {
		t.Errorf("C's modules.dep lacks loop.ko:\n%s", dep)
	}
}

func changedPaths(d *state.Diff) []string {
	var out []string
	for _, c := range d.Changed {
		out = append(out, c.Path)
	}
	return out
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var _ = testenv.SharedDir
var _ = tree.TypeReg
