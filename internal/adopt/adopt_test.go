package adopt

import (
	"context"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mossfs/mossfs/internal/mossdb"
	"github.com/mossfs/mossfs/internal/state"
	"github.com/mossfs/mossfs/internal/stone"
	"github.com/mossfs/mossfs/internal/testenv"
	"github.com/mossfs/mossfs/overlay"
	"golang.org/x/sys/unix"
)

// TestMain runs the tests in a private mount namespace (as root) and
// removes the benchmark's installation and the built command afterwards.
func TestMain(m *testing.M) {
	if testenv.InPrivateMountNS() || os.Geteuid() != 0 {
		code := m.Run()
		if benchDir != "" {
			os.RemoveAll(benchDir)
		}
		if cliBin != "" {
			os.RemoveAll(filepath.Dir(cliBin))
		}
		os.Exit(code)
	}
	testenv.MainInMountNS(m)
}

// Generated packages that exercise the blit rules.
var (
	baselayout = genPkg("baselayout",
		sym("lib64", "lib"),
		dir("lib", 0o755),
		dir("share/empty", 0o700),
		dir("share/private", 0o750),
		tRow{typ: "character-device", path: "share/console", mode: 0o600},
		tRow{typ: "regular", path: "share/nobody-owns", mode: 0o640, uid: 4000000000, gid: 65534, data: []byte("owned by a uid moss stores as a negative i32\n")},
	)
	glibc = genPkg("glibc",
		reg("lib64/ld-linux-x86-64.so.2", 0o755, "the dynamic loader, shipped below the lib64 symlink\n"),
		reg("lib64/libc.so.6", 0o755, strings.Repeat("libc ", 300000)), // > 1 MiB: the streamed path
		reg("lib/libm.so.6", 0o755, "libm\n"),
		reg("bin/su", 0o4755, "setuid\n"),
		reg("share/empty-file", 0o644, ""),
		tRow{typ: "regular", path: "share/owned", mode: 0o640, uid: 1000, gid: 100, data: []byte("owned by 1000:100\n")},
	)
	dupA = genPkg("dup-a", reg("share/dup", 0o644, "from dup-a\n"), reg("share/shared-content", 0o644, "same bytes in two packages\n"))
	dupB = genPkg("dup-b", reg("share/dup", 0o600, "from dup-b\n"), reg("share/shared-content2", 0o644, "same bytes in two packages\n"), sym("share/dup-link", "dup"))
)

// testInstall has three states with different selections: real stones
// (bash-completion's digests include leading zeros) and generated packages;
// state 2 has an archived tree with moss's and a trigger's files, state 3
// is the live /usr.
func testInstall(t testing.TB) *tInstall {
	t.Helper()
	sd := stonesDir(t)
	bc := stonePkg(t, filepath.Join(sd, "bash-completion-2.11-1-1-x86_64.stone"))
	pizza := stonePkg(t, filepath.Join(sd, "italian-pizza-1-1-1-x86_64.stone"))
	pine := stonePkg(t, filepath.Join(sd, "pineapple-1-1-1-x86_64.stone"))
	return &tInstall{
		pkgs: []tPkg{baselayout, bc, pizza, pine, glibc, dupA, dupB},
		states: [][]string{
			{baselayout.id, bc.id, pizza.id},
			{baselayout.id, glibc.id, dupA.id, dupB.id, bc.id, pine.id},
			{baselayout.id, glibc.id, dupB.id, dupA.id},
		},
		archives: map[uint64]map[string]string{
			2: {
				".stateID":                      "2",
				"lib/os-release":                "NAME=\"AerynOS\"\nVERSION_ID=2\n",
				"lib/system-model.kdl":          "packages {}\n",
				"lib/modules/6.1.0/modules.dep": "kernel/x.ko:\n",
				"share/dup":                     "the archived copy, which the layout overrides\n",
				"share/mime/text/":              "",
				"lib/ld-link":                   "->ld-linux-x86-64.so.2",
			},
		},
		live: map[string]string{".stateID": "3", "lib/os-release": "NAME=\"AerynOS\"\nVERSION_ID=3\n"},
	}
}

func newState(t testing.TB) *state.State {
	t.Helper()
	s, err := state.Create(filepath.Join(t.TempDir(), "state"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func adoptOne(t testing.TB, s *state.State, mossRoot string, id uint64) (*Result, error) {
	t.Helper()
	in, err := Open(mossRoot, nil)
	if err != nil {
		return nil, err
	}
	defer in.Close()
	lk, err := s.Lock()
	if err != nil {
		t.Fatal(err)
	}
	defer lk.Unlock()
	return in.State(context.Background(), s, id, Options{})
}

// mountTx mounts a transaction's image with the store as data layer, as
// mossfs mount does, and returns the mount point.
func mountTx(t *testing.T, s *state.State, tx *state.Transaction) string {
	t.Helper()
	fd, _, err := overlay.Mount(overlay.Options{Image: s.ImagePath(tx), ObjectsDir: s.Store().ObjectsDir()})
	if err != nil {
		t.Fatalf("mount transaction %d: %v", tx.ID, err)
	}
	defer unix.Close(fd)
	dir := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.MoveMount(fd, "", unix.AT_FDCWD, dir, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		t.Fatalf("attach at %s: %v", dir, err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	return dir
}

// TestAdoptMatchesBlitRules adopts every state of the test installation
// and compares each image, mounted by the kernel, with the oracle's tree.
func TestAdoptMatchesBlitRules(t *testing.T) {
	testenv.RequireMountNS(t)
	inst := testInstall(t)
	root := t.TempDir()
	inst.write(t, root)
	s := newState(t)
	archives := map[uint64]map[string]string{2: inst.archives[2], 3: inst.live}
	for id := uint64(1); id <= 3; id++ {
		res, err := adoptOne(t, s, root, id)
		if err != nil {
			t.Fatalf("adopt state %d: %v", id, err)
		}
		if res.Tx.ID != id {
			t.Fatalf("state %d became transaction %d", id, res.Tx.ID)
		}
		if len(res.Tx.Inputs) < len(inst.states[id-1]) {
			t.Fatalf("state %d: %d inputs, want one per package (%d)", id, len(res.Tx.Inputs), len(inst.states[id-1]))
		}
		for i, pid := range inst.states[id-1] {
			in := res.Tx.Inputs[i]
			if in.Package != pid || in.Kind != state.KindStone || in.Version == "" {
				t.Errorf("state %d input %d: %+v, want package %s", id, i, in, pid)
			}
		}
		t.Run("state"+string(rune('0'+id)), func(t *testing.T) {
			compareMounted(t, mountTx(t, s, res.Tx), oracle(inst, id, archives[id]))
		})
		t.Logf("state %d: %+v; extras from %q: %v; %d warnings", id, res.Transfer, res.ExtrasFrom, res.Extras, len(res.Warnings))
		switch id {
		case 1:
			if res.ExtrasFrom != "" {
				t.Errorf("state 1 has no archived tree, extras from %q", res.ExtrasFrom)
			}
		case 2:
			if !strings.HasSuffix(res.ExtrasFrom, "/.moss/root/2/usr") || len(res.Extras) == 0 {
				t.Errorf("state 2: extras from %q: %v", res.ExtrasFrom, res.Extras)
			}
			if !hasWarning(res.Warnings, "/usr/share/dup") {
				t.Errorf("state 2: no warning about the duplicate /usr/share/dup: %q", res.Warnings)
			}
			// Contents are findable by SHA-256 too (the state's sha256 index).
			for _, c := range []string{string(glibc.rows[1].data), inst.archives[2]["lib/modules/6.1.0/modules.dep"]} {
				if _, err := os.Lstat(filepath.Join(s.Root(), state.IndexRelPath(sha256.Sum256([]byte(c))))); err != nil {
					t.Errorf("state 2: no sha256 index link for a content of %d bytes: %v", len(c), err)
				}
			}
			if res.Transfer.PresentFiles == 0 {
				t.Errorf("state 2 shares bash-completion with state 1, but nothing was already present: %+v", res.Transfer)
			}
		case 3:
			if res.ExtrasFrom != filepath.Join(root, "usr") {
				t.Errorf("state 3 is the live /usr, extras from %q", res.ExtrasFrom)
			}
		}
	}
	if f, err := s.FollowsMoss(); err != nil || f != root {
		t.Fatalf("after adopting, the state root follows %q (%v), want %s", f, err, root)
	}
	// A native compose is refused in a root that follows moss.
	if _, err := s.Compose(state.ComposeOptions{}); err == nil || !strings.Contains(err.Error(), "--id") {
		t.Fatalf("native compose in a following root: %v, want a refusal asking for --id", err)
	}
}

func hasWarning(ws []string, s string) bool {
	for _, w := range ws {
		if strings.Contains(w, s) {
			return true
		}
	}
	return false
}

// TestReadoptIsNoop adopts a state twice: the second time nothing is
// written and the transaction stays the same.
func TestReadoptIsNoop(t *testing.T) {
	inst := testInstall(t)
	root := t.TempDir()
	inst.write(t, root)
	s := newState(t)
	first, err := adoptOne(t, s, root, 1)
	if err != nil {
		t.Fatal(err)
	}
	imgs, _ := os.ReadDir(s.ImagesDir())
	second, err := adoptOne(t, s, root, 1)
	if err != nil {
		t.Fatal(err)
	}
	if !second.Unchanged || second.Tx.Image != first.Tx.Image {
		t.Fatalf("re-adopt: unchanged=%v image %s, want unchanged with image %s", second.Unchanged, second.Tx.Image, first.Tx.Image)
	}
	after, _ := os.ReadDir(s.ImagesDir())
	if len(after) != len(imgs) {
		t.Fatalf("re-adopt wrote images: %d before, %d after", len(imgs), len(after))
	}
	ids, _ := s.IDs()
	if len(ids) != 1 {
		t.Fatalf("transactions %v, want [1]", ids)
	}
}

// TestAdoptErrors: each bad installation gives a clear error naming what
// is wrong, and no transaction is published.
func TestAdoptErrors(t *testing.T) {
	bad := func(rows ...tRow) *tInstall {
		p := genPkg("bad", rows...)
		return &tInstall{pkgs: []tPkg{baselayout, p}, states: [][]string{{baselayout.id, p.id}}}
	}
	asset := func(root, data string) string {
		return filepath.Join(root, ".moss", "assets", "v2", stone.MossAssetPath(xxh([]byte(data))))
	}
	const content = "the content of a file that goes missing or bad\n"
	cases := []struct {
		name   string
		inst   *tInstall
		id     uint64
		break_ func(root string)
		want   string
		is     error
	}{
		{name: "missing asset", inst: bad(reg("bin/tool", 0o755, content)), id: 1,
			break_: func(root string) { os.Remove(asset(root, content)) },
			want:   "bin/tool", is: os.ErrNotExist},
		{name: "corrupted asset", inst: bad(reg("bin/tool", 0o755, content)), id: 1,
			break_: func(root string) { os.WriteFile(asset(root, content), []byte(strings.ToUpper(content)), 0o644) },
			want:   "bin/tool", is: ErrAssetMismatch},
		{name: "dot-dot path", inst: bad(reg("../etc/passwd", 0o644, "x")), id: 1, want: `"../etc/passwd"`},
		{name: "absolute path", inst: bad(reg("/etc/shadow", 0o644, "x")), id: 1, want: `"/etc/shadow"`},
		{name: "unknown state", inst: bad(reg("bin/tool", 0o755, content)), id: 7, want: "moss state 7 does not exist", is: mossdb.ErrNoState},
		{name: "unknown user_version", inst: func() *tInstall { i := bad(reg("bin/tool", 0o755, content)); i.userVersion = 2; return i }(), id: 1, want: "schema version 2"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			root := t.TempDir()
			c.inst.write(t, root)
			if c.break_ != nil {
				c.break_(root)
			}
			s := newState(t)
			_, err := adoptOne(t, s, root, c.id)
			if err == nil {
				t.Fatal("adopt succeeded")
			}
			if !strings.Contains(err.Error(), c.want) || (c.is != nil && !errors.Is(err, c.is)) {
				t.Fatalf("error %q, want one naming %q (is %v)", err, c.want, c.is)
			}
			t.Logf("%s: %v", c.name, err)
			if ids, _ := s.IDs(); len(ids) != 0 {
				t.Fatalf("transactions %v published", ids)
			}
			if imgs, _ := os.ReadDir(s.ImagesDir()); len(imgs) != 0 {
				t.Fatalf("%d images written", len(imgs))
			}
		})
	}
}

// TestAdoptWaitsForMossLock: while a writer holds moss's lock exclusively
// (as moss install does), adopt waits; it goes on once the lock is free.
func TestAdoptWaitsForMossLock(t *testing.T) {
	inst := testInstall(t)
	root := t.TempDir()
	inst.write(t, root)
	lf, err := os.OpenFile(filepath.Join(root, mossdb.LockFile), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer lf.Close()
	if err := unix.Flock(int(lf.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	waiting := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		in, err := Open(root, func() { close(waiting) })
		if err == nil {
			in.Close()
		}
		done <- err
	}()
	select {
	case <-waiting:
	case err := <-done:
		t.Fatalf("adopt opened the installation while moss's lock was held exclusively (err %v)", err)
	}
	select {
	case err := <-done:
		t.Fatalf("adopt returned while moss's lock was held (err %v)", err)
	case <-time.After(200 * time.Millisecond):
	}
	if err := unix.Flock(int(lf.Fd()), unix.LOCK_UN); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("after the lock was released: %v", err)
	}
}

// TestRenameExchangeOfMountedUsrFails shows why following moss is not a
// live switch: once /usr is a mount point, moss's promotion,
// renameat2(staging/usr, /usr, RENAME_EXCHANGE), fails with EBUSY.
func TestRenameExchangeOfMountedUsrFails(t *testing.T) {
	testenv.RequireMountNS(t)
	root := t.TempDir()
	staging := filepath.Join(root, ".moss", "root", "staging", "usr")
	usr := filepath.Join(root, "usr")
	for _, d := range []string{staging, usr} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// Unmounted, the exchange works, as moss relies on.
	if err := unix.Renameat2(unix.AT_FDCWD, staging, unix.AT_FDCWD, usr, unix.RENAME_EXCHANGE); err != nil {
		t.Fatalf("exchange of plain directories: %v", err)
	}
	if err := unix.Mount("tmpfs", usr, "tmpfs", unix.MS_RDONLY, ""); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(usr, unix.MNT_DETACH)
	err := unix.Renameat2(unix.AT_FDCWD, staging, unix.AT_FDCWD, usr, unix.RENAME_EXCHANGE)
	if !errors.Is(err, unix.EBUSY) {
		t.Fatalf("exchange with a mounted /usr: %v, want EBUSY", err)
	}
}

// TestFollow runs what adopt --follow does after moss transactions: moss
// adds state 4 and prunes states 1 and 2. The newest state is adopted and
// becomes the boot default (its entry written from the existing mossfs
// entry), the transaction of pruned state 2 goes, and that of pruned
// state 1 stays because it is pinned.
func TestFollow(t *testing.T) {
	inst := testInstall(t)
	root := t.TempDir()
	inst.write(t, root)
	s := newState(t)
	for id := uint64(1); id <= 3; id++ {
		if _, err := adoptOne(t, s, root, id); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Pin("keep-1", "1"); err != nil {
		t.Fatal(err)
	}
	// moss: a new state (3's packages and pineapple), states 1 and 2 pruned.
	pine := inst.pkgs[3]
	var sql strings.Builder
	sql.WriteString("BEGIN;\nINSERT INTO state (id, type, created) VALUES (4, 'transaction', 1700000100);\n")
	for _, pid := range append(append([]string{}, inst.states[2]...), pine.id) {
		sql.WriteString("INSERT INTO state_selections VALUES (4, " + sqlStr(pid) + ", 1, NULL);\n")
	}
	sql.WriteString("PRAGMA foreign_keys = ON;\nDELETE FROM state_selections WHERE state_id IN (1, 2);\nDELETE FROM state WHERE id IN (1, 2);\nCOMMIT;\n")
	sqlite(t, filepath.Join(root, mossdb.StateDB), sql.String())

	entries := filepath.Join(t.TempDir(), "loader", "entries")
	if err := os.MkdirAll(entries, 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(entries, "mossfs-3.conf"), []byte("title mossfs\nlinux /vmlinuz-6.12\ninitrd /initrd-6.12\noptions root=/dev/vda quiet moss.tx=3\n"), 0o644)
	os.WriteFile(filepath.Join(entries, "aerynos-3.conf"), []byte("title AerynOS\nlinux /vmlinuz-6.12\noptions root=/dev/vda moss.fstx=3\n"), 0o644)
	os.WriteFile(filepath.Join(filepath.Dir(entries), "loader.conf"), []byte("default aerynos-3.conf\ntimeout 3\n"), 0o644)

	in, err := Open(root, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	states, err := in.States(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	newest := states[len(states)-1].ID
	if newest != 4 {
		t.Fatalf("newest moss state %d, want 4", newest)
	}
	lk, _ := s.Lock()
	res, err := in.State(context.Background(), s, newest, Options{})
	lk.Unlock()
	if err != nil || res.Unchanged || res.Tx.ID != 4 {
		t.Fatalf("adopt newest: %+v, %v", res, err)
	}
	dirs, err := BootDefault(s, 4, []string{entries})
	if err != nil || len(dirs) != 1 {
		t.Fatalf("boot default: %v %v", dirs, err)
	}
	conf, _ := os.ReadFile(filepath.Join(filepath.Dir(entries), "loader.conf"))
	if !strings.Contains(string(conf), "default mossfs-4.conf") || !strings.Contains(string(conf), "timeout 3") {
		t.Fatalf("loader.conf:\n%s", conf)
	}
	e4, err := os.ReadFile(filepath.Join(entries, "mossfs-4.conf"))
	if err != nil || !strings.Contains(string(e4), "moss.tx=4") || !strings.Contains(string(e4), "linux /vmlinuz-6.12") {
		t.Fatalf("entry of transaction 4: %v\n%s", err, e4)
	}
	if _, err := os.Stat(filepath.Join(entries, "aerynos-3.conf")); err != nil {
		t.Fatalf("moss's own entry was touched: %v", err)
	}
	pruned, kept, err := PruneFollowed(s, in.Root, states)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(pruned, []uint64{2}) || !strings.Contains(kept[1], "pinned") || len(kept) != 1 {
		t.Fatalf("pruned %v, kept %v; want 2 pruned and 1 kept as pinned", pruned, kept)
	}
	if ids, _ := s.IDs(); !slices.Equal(ids, []uint64{1, 3, 4}) {
		t.Fatalf("transactions %v, want [1 3 4]", ids)
	}
}
