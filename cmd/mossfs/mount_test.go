package main

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mossfs/mossfs/fsverity"
	"github.com/mossfs/mossfs/internal/bls"
	"github.com/mossfs/mossfs/internal/mountrec"
	"github.com/mossfs/mossfs/internal/sign"
	"github.com/mossfs/mossfs/internal/state"
	"github.com/mossfs/mossfs/internal/testenv"
	"github.com/mossfs/mossfs/mounttuck"
	"github.com/mossfs/mossfs/overlay/overlaytest"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"
)

// resetFlag restores a flag's default between in-process runs; a slice
// flag's DefValue ("[]") would otherwise be parsed as one element.
func resetFlag(f *pflag.Flag) {
	if sv, ok := f.Value.(pflag.SliceValue); ok {
		sv.Replace(nil)
	} else {
		f.Value.Set(f.DefValue)
	}
	f.Changed = false
}

// run executes mossfs with args in-process, every flag reset to its
// default first, and returns stdout and stderr.
func run(args ...string) (string, string, error) {
	var reset func(c *cobra.Command)
	reset = func(c *cobra.Command) {
		c.Flags().VisitAll(resetFlag)
		for _, s := range c.Commands() {
			reset(s)
		}
	}
	reset(rootCmd)
	var out, errb bytes.Buffer
	rootCmd.SetOut(&out)
	rootCmd.SetErr(&errb)
	rootCmd.SetArgs(args)
	err := rootCmd.Execute()
	return out.String(), errb.String(), err
}

func mustRun(t *testing.T, args ...string) string {
	t.Helper()
	out, errs, err := run(args...)
	if err != nil {
		t.Fatalf("mossfs %s: %v\n%s", strings.Join(args, " "), err, errs)
	}
	return out
}

// stateRoot is a state root (state.Create) with transactions 1 (A), 2 (B,
// parent 1) and 3 (C, no parent): metadata written as compose writes it.
type stateRoot struct {
	root   string
	txs    map[uint64]*overlaytest.Tx
	digest map[uint64]string
}

func newStateRoot(t *testing.T) *stateRoot {
	t.Helper()
	s := &stateRoot{root: t.TempDir(), txs: map[uint64]*overlaytest.Tx{}, digest: map[uint64]string{}}
	st, err := state.Create(s.root)
	if err != nil {
		t.Fatal(err)
	}
	objects := st.Store().ObjectsDir()
	for id, spec := range map[uint64]struct {
		marker string
		parent uint64
	}{1: {"A", 0}, 2: {"B", 1}, 3: {"C", 0}} {
		tx := overlaytest.Sample(spec.marker)
		tx.WriteObjects(t, objects)
		img := overlaytest.Image(t, tx.Root)
		d := fsverity.Sum(img)
		hexd := hex.EncodeToString(d[:])
		if err := os.WriteFile(filepath.Join(s.root, "images", hexd), img, 0o644); err != nil {
			t.Fatal(err)
		}
		meta, _ := json.Marshal(map[string]any{"id": id, "parent": spec.parent, "image": hexd, "time": "2026-01-01T00:00:00Z"})
		if err := os.WriteFile(filepath.Join(s.root, "transactions", fmt.Sprintf("%d.json", id)), meta, 0o644); err != nil {
			t.Fatal(err)
		}
		s.txs[id], s.digest[id] = tx, hexd
	}
	return s
}

// scratchTarget returns an empty directory on a fresh tmpfs.
func scratchTarget(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := unix.Mount("scratch", dir, "tmpfs", 0, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	target := filepath.Join(dir, "usr")
	os.Mkdir(target, 0o755)
	return target
}

func mountCount(t *testing.T, target string) int {
	t.Helper()
	m, err := mounttuck.MountsAt(target)
	if err != nil {
		t.Fatal(err)
	}
	return len(m)
}

func status(t *testing.T, root string) statusReport {
	t.Helper()
	var rep statusReport
	out := mustRun(t, "status", "--root", root, "--json")
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	return rep
}

func TestMountCommandMountsSwitchesAndUnmounts(t *testing.T) {
	testenv.RequireMountNS(t)
	s := newStateRoot(t)
	target := scratchTarget(t)

	mustRun(t, "mount", "--root", s.root, "--driver", "overlay", "1", target)
	overlaytest.Compare(t, target, s.txs[1])
	rec, ok, err := mountrec.Get(s.root, target)
	if err != nil || !ok || rec.Tx != 1 || rec.Image != s.digest[1] || rec.Driver != "overlay" || rec.Verity != "off" {
		t.Fatalf("mount record %+v %v %v", rec, ok, err)
	}

	// The state helper refuses to remove a mounted transaction.
	st, err := state.Open(s.root)
	if err != nil {
		t.Fatal(err)
	}
	var perr *state.ProtectedError
	if err := st.Remove([]uint64{1}, false); !errors.As(err, &perr) {
		t.Fatalf("state remove of the mounted transaction: %v, want a ProtectedError", err)
	}

	// Mounting over a mossfs mount replaces it; nothing piles up.
	mustRun(t, "mount", "--root", s.root, "--driver", "overlay", "2", target)
	overlaytest.Compare(t, target, s.txs[2])
	if n := mountCount(t, target); n != 1 {
		t.Fatalf("%d mounts at target", n)
	}
	rep := status(t, s.root)
	if len(rep.Mounts) != 1 || rep.Mounts[0].Tx != 2 || !rep.Mounts[0].Mounted || !rep.Mounts[0].Recorded || rep.Mounts[0].Stacked != 1 {
		t.Fatalf("status: %+v", rep)
	}
	if out := mustRun(t, "status", "--root", s.root); !strings.Contains(out, target) {
		t.Errorf("status text does not name %s:\n%s", target, out)
	}

	mustRun(t, "umount", "--root", s.root, target)
	if n := mountCount(t, target); n != 0 {
		t.Fatalf("%d mounts left after umount", n)
	}
	if _, ok, _ := mountrec.Get(s.root, target); ok {
		t.Fatal("record left after umount")
	}
	if _, _, err := run("umount", "--root", s.root, target); err == nil {
		t.Fatal("umount of an empty target succeeded")
	}
}

func TestMountCommandImageArguments(t *testing.T) {
	testenv.RequireMountNS(t)
	s := newStateRoot(t)
	target := scratchTarget(t)
	mustRun(t, "mount", "--root", s.root, "--driver", "overlay", "sha256:"+s.digest[2], target)
	overlaytest.Compare(t, target, s.txs[2])
	// A store image is recorded by its digest, which state reads as a gc root.
	st, _ := state.Open(s.root)
	recs, err := st.Mounts()
	if err != nil || len(recs) != 1 || recs[0].Image != s.digest[2] || recs[0].Tx != 0 {
		t.Fatalf("state mount records: %+v, %v", recs, err)
	}
	// An image file with an explicit object directory; no record for bare images.
	img := filepath.Join(s.root, "images", s.digest[3])
	mustRun(t, "mount", "--root", t.TempDir(), "--driver", "overlay", "--objects", filepath.Join(s.root, "cas/objects"), img, target)
	overlaytest.Compare(t, target, s.txs[3])
	if n := mountCount(t, target); n != 1 {
		t.Fatalf("%d mounts at target", n)
	}
	for _, bad := range [][]string{
		{"mount", "--root", s.root, "99", target},
		{"mount", "--root", s.root, "sha256:abc", target},
		{"mount", "--root", s.root, "sha256:" + strings.Repeat("0", 64), target},
		{"mount", "--root", s.root, filepath.Join(s.root, "missing"), target},
		{"mount", "--root", s.root, "--verity", "maybe", "1", target},
		{"mount", "--root", s.root, "--driver", "nfs", "1", target},
		{"mount", "--root", s.root, "1", filepath.Join(target, "missing")},
	} {
		if _, _, err := run(bad...); err == nil {
			t.Errorf("mossfs %s succeeded", strings.Join(bad, " "))
		} else {
			t.Logf("%s: %v", bad[3], err)
		}
	}
	overlaytest.Compare(t, target, s.txs[3])
}

func TestMountCommandRefusesForeignMount(t *testing.T) {
	testenv.RequireMountNS(t)
	s := newStateRoot(t)
	target := scratchTarget(t)
	if err := unix.Mount("someone-else", target, "tmpfs", 0, ""); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(target, "theirs"), []byte("x"), 0o644)
	_, _, err := run("mount", "--root", s.root, "--driver", "overlay", "1", target)
	if err == nil || !strings.Contains(err.Error(), "refusing") {
		t.Fatalf("mount over a foreign tmpfs: %v", err)
	}
	if _, err := os.Stat(filepath.Join(target, "theirs")); err != nil {
		t.Fatalf("foreign mount disturbed: %v", err)
	}
	if _, _, err := run("umount", "--root", s.root, target); err == nil {
		t.Fatal("umount of a foreign mount succeeded")
	}
}

func TestSwitchAndRollback(t *testing.T) {
	testenv.RequireMountNS(t)
	s := newStateRoot(t)
	target := scratchTarget(t)
	sw := func(args ...string) {
		t.Helper()
		mustRun(t, append([]string{"--root", s.root, "--target", target, "--driver", "overlay"}, args...)...)
	}
	active := func() uint64 {
		t.Helper()
		id, err := readActive(s.root)
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	// Boot entries for 1 and 2 (as mossfs bls writes them), default 1.
	entries := filepath.Join(t.TempDir(), "loader", "entries")
	if _, err := bls.Sync(entries, []bls.Transaction{{ID: 1}, {ID: 2}}, bls.Config{Linux: "/vmlinuz", Options: "root=/dev/vda"}); err != nil {
		t.Fatal(err)
	}
	if err := bls.SetDefault(entries, 1); err != nil {
		t.Fatal(err)
	}
	bootDefault := func(want uint64) {
		t.Helper()
		if d, err := bls.Default(entries); err != nil || d != bls.EntryName(want) {
			t.Fatalf("boot default %q (%v), want %s", d, err, bls.EntryName(want))
		}
	}
	sw("switch", "1")
	overlaytest.Compare(t, target, s.txs[1])
	sw("switch", "2", "--bls-dir", entries)
	overlaytest.Compare(t, target, s.txs[2])
	if a := active(); a != 2 {
		t.Fatalf("active %d, want 2", a)
	}
	bootDefault(2)
	// 2's parent is 1.
	sw("rollback", "--bls-dir", entries)
	overlaytest.Compare(t, target, s.txs[1])
	if a := active(); a != 1 {
		t.Fatalf("after rollback active %d, want 1", a)
	}
	bootDefault(1)
	// 3 has no parent: rollback goes to the previously active one.
	sw("switch", "3")
	sw("rollback")
	overlaytest.Compare(t, target, s.txs[1])
	if n := mountCount(t, target); n != 1 {
		t.Fatalf("%d mounts at target after switches", n)
	}
	rec, _, _ := mountrec.Get(s.root, target)
	if rec.Tx != 1 {
		t.Fatalf("record tx %d, want 1", rec.Tx)
	}
	// 1 has neither parent nor (now) a different previous one... it has 3.
	if _, _, err := run("switch", "--root", s.root, "--target", target, "7"); err == nil {
		t.Fatal("switch to a missing transaction succeeded")
	}
	overlaytest.Compare(t, target, s.txs[1])
}

func TestRollbackWithoutHistory(t *testing.T) {
	s := newStateRoot(t)
	if _, _, err := run("rollback", "--root", s.root); err == nil {
		t.Fatal("rollback without an active transaction succeeded")
	}
	setActive(s.root, 1)
	if _, _, err := run("rollback", "--root", s.root); err == nil || !strings.Contains(err.Error(), "no parent") {
		t.Fatalf("rollback from a transaction without parent or history: %v", err)
	}
}

func TestSwitchVerifiesSignature(t *testing.T) {
	testenv.RequireMountNS(t)
	s := newStateRoot(t)
	target := scratchTarget(t)
	keys := t.TempDir()
	if _, err := sign.GenerateKey(filepath.Join(keys, "good")); err != nil {
		t.Fatal(err)
	}
	if _, err := sign.GenerateKey(filepath.Join(keys, "other")); err != nil {
		t.Fatal(err)
	}
	priv, err := sign.LoadPrivateKey(filepath.Join(keys, "good"))
	if err != nil {
		t.Fatal(err)
	}
	d, _ := hex.DecodeString(s.digest[1])
	if _, err := sign.WriteSignature(s.root, priv, 1, [32]byte(d)); err != nil {
		t.Fatal(err)
	}
	args := func(tx, key string) []string {
		return []string{"switch", "--root", s.root, "--target", target, "--driver", "overlay", "--pubkey", filepath.Join(keys, key+".pub"), tx}
	}
	if _, _, err := run(args("2", "good")...); err == nil {
		t.Fatal("switch to an unsigned transaction succeeded")
	}
	if _, _, err := run(args("1", "other")...); err == nil {
		t.Fatal("switch with the wrong key succeeded")
	}
	if n := mountCount(t, target); n != 0 {
		t.Fatalf("refused switches mounted something (%d mounts)", n)
	}
	// Replacing the checked image by rename between the check and the mount
	// (here with transaction 2's image) changes nothing: the file checked
	// is the file mounted.
	img1 := filepath.Join(s.root, "images", s.digest[1])
	afterSignatureCheck = func(image string) {
		if image != img1 {
			t.Errorf("checked %s, want %s", image, img1)
		}
		saved := img1 + ".saved"
		if err := os.Link(img1, saved); err != nil {
			t.Fatal(err)
		}
		swap := img1 + ".swap"
		data, _ := os.ReadFile(filepath.Join(s.root, "images", s.digest[2]))
		os.WriteFile(swap, data, 0o644)
		if err := os.Rename(swap, img1); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Rename(saved, img1) })
	}
	mustRun(t, args("1", "good")...)
	afterSignatureCheck = func(string) {}
	overlaytest.Compare(t, target, s.txs[1])
	if err := os.Rename(img1+".saved", img1); err != nil {
		t.Fatal(err)
	}

	// A signature covers the image bytes: a tampered image is refused.
	img := filepath.Join(s.root, "images", s.digest[1])
	b, _ := os.ReadFile(img)
	b[len(b)-1] ^= 1
	os.WriteFile(img, b, 0o644)
	if _, _, err := run(args("1", "good")...); err == nil {
		t.Fatal("switch to a tampered image succeeded")
	} else {
		t.Logf("tampered: %v", err)
	}
	overlaytest.Compare(t, target, s.txs[1])
}

func TestCheckCommand(t *testing.T) {
	testenv.RequireMountNS(t)
	out := mustRun(t, "check", "--root", t.TempDir(), "--json")
	var rep struct {
		Kernel   string `json:"kernel"`
		Features []struct {
			Name string `json:"name"`
			OK   bool   `json:"ok"`
		} `json:"features"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("check --json: %v\n%s", err, out)
	}
	if rep.Kernel == "" || len(rep.Features) == 0 {
		t.Fatalf("check --json: %s", out)
	}
	text := mustRun(t, "check", "--root", t.TempDir())
	for _, want := range []string{"mount-beneath", "fuse-passthrough", "overlay-data-only-lowers", "fs-verity", "erofs-file-backed", "mount driver:"} {
		if !strings.Contains(text, want) {
			t.Errorf("check output lacks %q:\n%s", want, text)
		}
	}
	t.Logf("\n%s", text)
}

// TestStatusRecordOfEarlierBoot: a record written during an earlier boot is
// shown as such, never as the mount now at its target.
func TestStatusRecordOfEarlierBoot(t *testing.T) {
	root := t.TempDir()
	if err := mountrec.Write(root, mountrec.Record{Target: "/", Tx: 4, Driver: "overlay", BootID: "00000000-0000-0000-0000-000000000000"}); err != nil {
		t.Fatal(err)
	}
	rep, err := collectStatus(root)
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, m := range rep.Mounts {
		if m.Tx == 4 {
			found = true
			if !m.EarlierBoot || m.Mounted || m.Target != "/" {
				t.Errorf("stale record shown as %+v", m)
			}
		} else if m.Target == "/" && m.Recorded {
			t.Errorf("the record of an earlier boot was attached to the mount at /: %+v", m)
		}
	}
	if !found {
		t.Fatalf("stale record missing from status: %+v", rep)
	}
	out := mustRun(t, "status", "--root", root)
	if !strings.Contains(out, "earlier boot") {
		t.Errorf("status output:\n%s", out)
	}
}

// TestSwitchRecordsTheMountMade: a switch writes the mount record before
// its mount, guessing from the last record how the mount will be made; a
// mount made otherwise (here the last record names another method and
// verity) still leaves the record of the mount made. A switch whose mount
// fails (a broken image) records nothing: the active transaction, the
// record and the boot default stay, and no temporary file is left.
func TestSwitchRecordsTheMountMade(t *testing.T) {
	testenv.RequireMountNS(t)
	s := newStateRoot(t)
	target := scratchTarget(t)
	entries := filepath.Join(t.TempDir(), "loader", "entries")
	if _, err := bls.Sync(entries, []bls.Transaction{{ID: 1}, {ID: 2}, {ID: 3}}, bls.Config{Linux: "/vmlinuz", Options: "root=/dev/vda"}); err != nil {
		t.Fatal(err)
	}
	sw := func(id string) error {
		_, _, err := run("switch", "--root", s.root, "--target", target, "--driver", "overlay", "--bls-dir", entries, id)
		return err
	}
	if err := sw("1"); err != nil {
		t.Fatal(err)
	}
	made, ok, err := mountrec.Get(s.root, target)
	if err != nil || !ok || made.Method == "" {
		t.Fatalf("record after the first switch: %+v, %v, %v", made, ok, err)
	}
	wrong := made
	wrong.Method, wrong.Verity = "bogus-method", "require"
	if err := mountrec.Write(s.root, wrong); err != nil {
		t.Fatal(err)
	}
	if err := sw("2"); err != nil {
		t.Fatal(err)
	}
	rec, _, err := mountrec.Get(s.root, target)
	if err != nil || rec.Tx != 2 || rec.Image != s.digest[2] || rec.Method != made.Method || rec.Verity != made.Verity || rec.Driver != "overlay" {
		t.Fatalf("record after a mount made otherwise than guessed: %+v, %v; want tx 2, method %q, verity %q", rec, err, made.Method, made.Verity)
	}
	overlaytest.Compare(t, target, s.txs[2])

	// Break transaction 3's image: its mount fails.
	img := filepath.Join(s.root, "images", s.digest[3])
	if err := os.Chmod(img, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(img, []byte("not an image"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := sw("3"); err == nil {
		t.Fatal("switch to a broken image succeeded")
	}
	if a, err := readActive(s.root); err != nil || a != 2 {
		t.Errorf("active %d (%v) after a failed switch, want 2", a, err)
	}
	if after, _, err := mountrec.Get(s.root, target); err != nil || after != rec {
		t.Errorf("record after a failed switch: %+v, %v; want %+v", after, err, rec)
	}
	if d, err := bls.Default(entries); err != nil || d != bls.EntryName(2) {
		t.Errorf("boot default %q (%v) after a failed switch, want %s", d, err, bls.EntryName(2))
	}
	overlaytest.Compare(t, target, s.txs[2])
	for _, dir := range []string{s.root, mountrec.Dir(s.root), filepath.Dir(entries)} {
		ents, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), ".tmp-") {
				t.Errorf("temporary file left: %s", filepath.Join(dir, e.Name()))
			}
		}
	}
}
