package cas

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mossfs/mossfs/fsverity"
)

func randomBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 7))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// toolDigest is the independent oracle: the Debian fsverity tool.
func toolDigest(t *testing.T, path string) [32]byte {
	t.Helper()
	if _, err := exec.LookPath("fsverity"); err != nil && os.Getenv("MOSSFS_KVM_GUEST") == "1" {
		// The VM guest has no fsverity tool; the host run checks against it.
		d, err := fsverity.DigestFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	out, err := exec.Command("fsverity", "digest", "--hash-alg=sha256", "--block-size=4096", "--compact", path).CombinedOutput()
	if err != nil {
		t.Fatalf("fsverity digest %s: %v\n%s", path, err, out)
	}
	d, err := ParseDigest(strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func newStore(t testing.TB) *Store {
	t.Helper()
	s, err := Create(filepath.Join(t.TempDir(), "store"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// checkObject asserts that object d holds want, mode 0600 (0644 in a bare
// digest store), and that the
// store has no strays.
func checkObject(t *testing.T, s *Store, d [32]byte, want []byte) {
	t.Helper()
	if !s.Has(d) {
		t.Fatalf("Has(%s) = false after storing it", Payload(d))
	}
	got, err := os.ReadFile(s.ObjectPath(d))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("object %s: content differs (%d bytes, want %d)", Payload(d), len(got), len(want))
	}
	st, err := os.Stat(s.ObjectPath(d))
	if err != nil {
		t.Fatal(err)
	}
	if want := map[bool]os.FileMode{true: 0o600, false: 0o644}[s.root != ""]; st.Mode() != want {
		t.Errorf("object %s: mode %v, want %v", Payload(d), st.Mode(), want)
	}
	if err := s.Verify(d); err != nil {
		t.Error(err)
	}
}

// replaceFile puts data at path as a new file (a verity-enabled object
// cannot be opened for writing).
func replaceFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func strays(t *testing.T, s *Store) []string {
	t.Helper()
	var out []string
	if err := s.WalkStrays(func([32]byte, int64) error { return nil }, func(rel string) { out = append(out, rel) }); err != nil {
		t.Fatal(err)
	}
	return out
}

func countObjects(t *testing.T, s *Store) int {
	t.Helper()
	n := 0
	if err := s.Walk(func([32]byte, int64) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestPayload(t *testing.T) {
	d := fsverity.Sum([]byte("hello world\n"))
	p := Payload(d)
	if p != "37/061ef2ac4c21bec68489b56138c5780306a4ad7fe6676236ecdf2c9027cd92" {
		t.Errorf("Payload = %s", p)
	}
	for _, in := range []string{p, "/" + p} {
		if got, err := ParsePayload(in); err != nil || got != d {
			t.Errorf("ParsePayload(%q) = %x, %v", in, got, err)
		}
	}
	for _, bad := range []string{"", "37", p[:64], p + "0", "3/7" + p[3:], "zz" + p[2:], strings.Replace(p, "/", "0", 1)} {
		if _, err := ParsePayload(bad); err == nil {
			t.Errorf("ParsePayload(%q) accepted", bad)
		}
	}
	if _, err := ParseDigest(hex.EncodeToString(d[:]) + "0"); err == nil {
		t.Error("ParseDigest accepted 65 digits")
	}
}

func TestCreateOpen(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "s")
	s, err := Create(dir)
	if err != nil {
		t.Fatal(err)
	}
	if s.ObjectsDir() != filepath.Join(dir, "objects") || s.Root() != dir {
		t.Errorf("ObjectsDir %s Root %s", s.ObjectsDir(), s.Root())
	}
	b, _ := os.ReadFile(filepath.Join(dir, "meta.json"))
	if !strings.Contains(string(b), `"version": 1`) || !strings.Contains(string(b), `"algorithm": "fsverity-sha256-12"`) {
		t.Errorf("meta.json:\n%s", b)
	}
	d, err := s.PutBytes([]byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	// Create on an existing store opens it.
	s2, err := Create(dir)
	if err != nil || !s2.Has(d) {
		t.Fatalf("Create on existing store: %v", err)
	}
	if _, err := Open(t.TempDir()); err == nil || !strings.Contains(err.Error(), "meta.json") {
		t.Errorf("Open without meta.json: %v", err)
	}
	for _, tc := range []struct{ meta, want string }{
		{`{"version":2,"algorithm":"fsverity-sha256-12"}`, "version 2"},
		{`{"version":1,"algorithm":"fsverity-sha512-12"}`, `"fsverity-sha512-12" is not supported`},
		{`{"version":1,"algorithm":"fsverity-sha256-12","features":{"incompatible":["zstd"]}}`, "zstd"},
		{`{"version":`, "invalid JSON"},
	} {
		os.WriteFile(filepath.Join(dir, "meta.json"), []byte(tc.meta), 0o644)
		_, err := Open(dir)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), dir) {
			t.Errorf("meta %s: error %v, want one naming %s and %q", tc.meta, err, dir, tc.want)
		}
	}
	os.WriteFile(filepath.Join(dir, "meta.json"), []byte(`{"version":1,"algorithm":"fsverity-sha256-12","features":{"read-only-compatible":["x"]}}`), 0o644)
	ro, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !ro.Has(d) {
		t.Error("read-only store: Has false")
	}
	if _, err := ro.PutBytes([]byte("new")); err == nil {
		t.Error("Put into a store with unknown read-only-compatible features succeeded")
	}
}

var putSizes = []int{0, 1, 4095, 4096, 4097, 100000, smallMax, smallMax + 1, 5<<20 + 3}

func TestPut(t *testing.T) {
	s := newStore(t)
	src := t.TempDir()
	for i, size := range putSizes {
		data := randomBytes(size, uint64(i))
		path := filepath.Join(src, strconv.Itoa(size))
		os.WriteFile(path, data, 0o600)
		want := toolDigest(t, path)
		for _, how := range []string{"Put", "PutBytes", "PutFile"} {
			var d [32]byte
			var err error
			switch how {
			case "Put":
				d, err = s.Put(bytes.NewReader(data))
			case "PutBytes":
				d, err = s.PutBytes(data)
			case "PutFile":
				d, err = s.PutFile(path)
			}
			if err != nil {
				t.Fatalf("%s(%d bytes): %v", how, size, err)
			}
			if d != want {
				t.Fatalf("%s(%d bytes) = %x, fsverity tool says %x", how, size, d, want)
			}
			checkObject(t, s, d, data)
			// A fresh store per method, so each one writes (not dedups).
			s2 := newStore(t)
			switch how {
			case "Put":
				d, err = s2.Put(io.MultiReader(bytes.NewReader(data[:size/3]), bytes.NewReader(data[size/3:])))
			case "PutBytes":
				d, err = s2.PutBytes(data)
			case "PutFile":
				d, err = s2.PutFile(path)
			}
			if err != nil || d != want {
				t.Fatalf("%s(%d bytes) into a new store = %x, %v", how, size, d, err)
			}
			checkObject(t, s2, d, data)
			if st := strays(t, s2); len(st) != 0 {
				t.Errorf("strays after %s: %v", how, st)
			}
		}
	}
	if n := countObjects(t, s); n != len(putSizes) {
		t.Errorf("%d objects, want %d", n, len(putSizes))
	}
	if st := strays(t, s); len(st) != 0 {
		t.Errorf("strays: %v", st)
	}
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutFile(src); err == nil {
		t.Error("PutFile of a directory succeeded")
	}
	if _, err := s.PutFile(filepath.Join(src, "missing")); err == nil {
		t.Error("PutFile of a missing file succeeded")
	}
	sup, known := s.VeritySupported()
	t.Logf("fs-verity on objects: supported %v (known %v)", sup, known)
	if known && sup {
		// Only on a kernel with fs-verity (the VM): objects must carry it.
		f, _ := s.Open(fsverity.Sum(nil))
		defer f.Close()
		if m, err := fsverity.Measure(int(f.Fd())); err != nil || m != fsverity.Sum(nil) {
			t.Errorf("verity enabled but Measure = %x, %v", m, err)
		}
	}
}

// TestPutNamedTemp covers filesystems without O_TMPFILE.
func TestPutNamedTemp(t *testing.T) {
	s := newStore(t)
	s.tmpfile.Store(no)
	for i, size := range []int{10, smallMax + 10} {
		data := randomBytes(size, uint64(100+i))
		d, err := s.Put(bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		checkObject(t, s, d, data)
		d2, err := s.Put(bytes.NewReader(data))
		if err != nil || d2 != d {
			t.Fatal(d2, err)
		}
	}
	if st := strays(t, s); len(st) != 0 {
		t.Errorf("strays: %v", st)
	}
}

// TestPutRepairsTorn: an object of the wrong size under its name (a crash
// before Sync) is replaced on the next Put of that content.
func TestPutRepairsTorn(t *testing.T) {
	s := newStore(t)
	for i, size := range []int{5000, smallMax + 5000} {
		data := randomBytes(size, uint64(200+i))
		d := fsverity.Sum(data)
		os.MkdirAll(filepath.Dir(s.ObjectPath(d)), 0o755)
		os.WriteFile(s.ObjectPath(d), data[:size/2], 0o644)
		if err := s.Verify(d); !errors.Is(err, ErrCorrupt) {
			t.Errorf("Verify of torn object: %v", err)
		}
		got, err := s.Put(bytes.NewReader(data))
		if err != nil || got != d {
			t.Fatal(got, err)
		}
		checkObject(t, s, d, data)
	}
	if st := strays(t, s); len(st) != 0 {
		t.Errorf("strays: %v", st)
	}
}

func TestConcurrentGoroutines(t *testing.T) {
	s := newStore(t)
	contents := [][]byte{randomBytes(3000, 1), randomBytes(smallMax+1, 2), randomBytes(3*smallMax, 3)}
	src := t.TempDir()
	for i, c := range contents {
		os.WriteFile(filepath.Join(src, strconv.Itoa(i)), c, 0o644)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for g := range 8 {
		wg.Go(func() {
			for i, c := range contents {
				var d [32]byte
				var err error
				if g%2 == 0 {
					d, err = s.Put(bytes.NewReader(c))
				} else {
					d, err = s.PutFile(filepath.Join(src, strconv.Itoa(i)))
				}
				if err == nil && d != fsverity.Sum(c) {
					err = fmt.Errorf("wrong digest %x", d)
				}
				if err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for _, c := range contents {
		checkObject(t, s, fsverity.Sum(c), c)
	}
	if n := countObjects(t, s); n != len(contents) {
		t.Errorf("%d objects, want %d", n, len(contents))
	}
	if st := strays(t, s); len(st) != 0 {
		t.Errorf("strays: %v", st)
	}
}

const childEnv = "MOSSFS_CAS_TEST_CHILD"

// TestHelperProcess is the child of the multi-process tests: it stores the
// contents of TestConcurrentProcesses (and optionally syncs) into the store
// named in the environment.
func TestHelperProcess(t *testing.T) {
	dir := os.Getenv(childEnv)
	if dir == "" {
		t.Skip("helper process for TestConcurrentProcesses and TestRecover")
	}
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	for round := range 3 {
		for _, c := range processContents() {
			if _, err := s.Put(bytes.NewReader(c)); err != nil {
				t.Fatal(err)
			}
		}
		_ = round
	}
	if os.Getenv("MOSSFS_CAS_TEST_SYNC") == "1" {
		if err := s.Sync(); err != nil {
			t.Fatal(err)
		}
	}
}

func processContents() [][]byte {
	var out [][]byte
	for i := range 40 {
		out = append(out, randomBytes(i*997+1, uint64(1000+i)))
	}
	out = append(out, randomBytes(2*smallMax+5, 999))
	return out
}

func startChild(t *testing.T, dir string, sync bool) *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), childEnv+"="+dir)
	if sync {
		cmd.Env = append(cmd.Env, "MOSSFS_CAS_TEST_SYNC=1")
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("child output:\n%s", out.String())
		}
	})
	return cmd
}

func TestConcurrentProcesses(t *testing.T) {
	s := newStore(t)
	a := startChild(t, s.Root(), true)
	b := startChild(t, s.Root(), true)
	if err := a.Wait(); err != nil {
		t.Fatal("child a:", err)
	}
	if err := b.Wait(); err != nil {
		t.Fatal("child b:", err)
	}
	contents := processContents()
	for _, c := range contents {
		checkObject(t, s, fsverity.Sum(c), c)
	}
	if n := countObjects(t, s); n != len(contents) {
		t.Errorf("%d objects, want %d", n, len(contents))
	}
	if st := strays(t, s); len(st) != 0 {
		t.Errorf("strays: %v", st)
	}
	if s.NeedsRecovery() {
		t.Error("NeedsRecovery after children synced")
	}
}

// TestRecover: a writer that dies without Sync leaves its batch marker;
// Recover re-hashes exactly the objects written since and quarantines a
// torn one.
func TestRecover(t *testing.T) {
	s := newStore(t)
	old, err := s.PutBytes([]byte("written and synced before the crash"))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	// Our own unsynced batch is live, not stale.
	if _, err := s.PutBytes([]byte("ours, not yet synced")); err != nil {
		t.Fatal(err)
	}
	if s.NeedsRecovery() {
		t.Fatal("NeedsRecovery with only a live batch")
	}
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	child := startChild(t, s.Root(), false) // exits without Sync: a "crash"
	if err := child.Wait(); err != nil {
		t.Fatal(err)
	}
	if !s.NeedsRecovery() {
		t.Fatal("no recovery needed after a writer died without Sync")
	}
	// Tear one object of the crashed batch the way ext4 can: right size, zeros.
	torn := processContents()[5]
	td := fsverity.Sum(torn)
	replaceFile(t, s.ObjectPath(td), make([]byte, len(torn)))
	var progress int
	rep, err := s.Recover(context.Background(), VerifyOptions{Progress: func(VerifyProgress) { progress++ }})
	if err != nil {
		t.Fatal(err)
	}
	// The crashed batch, plus what was written within the clock margin before it.
	if rep.Checked < len(processContents()) || rep.Checked > len(processContents())+2 || progress != rep.Checked {
		t.Errorf("Recover checked %d objects (progress %d), want the %d of the crashed batch", rep.Checked, progress, len(processContents()))
	}
	if len(rep.Bad) != 1 || rep.Bad[0].Payload != Payload(td) || rep.Quarantined != 1 {
		t.Fatalf("Recover report: %+v", rep)
	}
	if s.Has(td) {
		t.Error("torn object still present")
	}
	if _, err := os.Stat(rep.Bad[0].Quarantined); err != nil {
		t.Error(err)
	}
	if !s.Has(old) || s.NeedsRecovery() {
		t.Error("after Recover: old object lost or markers left")
	}
	// Storing the content again repairs the store.
	if d, err := s.PutBytes(torn); err != nil || d != td {
		t.Fatal(err)
	}
	checkObject(t, s, td, torn)
}

func TestVerifyAll(t *testing.T) {
	s := newStore(t)
	var ds [][32]byte
	var total int64
	for i := range 30 {
		c := randomBytes(i*5000, uint64(300+i))
		d, err := s.PutBytes(c)
		if err != nil {
			t.Fatal(err)
		}
		ds = append(ds, d)
		total += int64(len(c))
	}
	// Damage two objects, add strays.
	for _, i := range []int{3, 17} {
		p := s.ObjectPath(ds[i])
		b, _ := os.ReadFile(p)
		b[len(b)/2] ^= 1
		replaceFile(t, p, b)
	}
	os.WriteFile(filepath.Join(s.ObjectsDir(), "README"), nil, 0o644)
	os.WriteFile(filepath.Join(filepath.Dir(s.ObjectPath(ds[1])), "short"), nil, 0o644)
	var last VerifyProgress
	rep, err := s.VerifyAll(context.Background(), VerifyOptions{Progress: func(p VerifyProgress) { last = p }})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Checked != 30 || rep.Bytes != total || last.Objects != 30 || last.TotalBytes != total || last.Bytes != total {
		t.Errorf("report %+v, last progress %+v", rep, last)
	}
	if len(rep.Bad) != 2 || rep.Quarantined != 2 || len(rep.Strays) != 2 {
		t.Fatalf("report %+v", rep)
	}
	for _, b := range rep.Bad {
		if !strings.Contains(b.Error, "does not match") {
			t.Errorf("bad object error: %s", b.Error)
		}
	}
	if s.Has(ds[3]) || s.Has(ds[17]) || !s.Has(ds[4]) {
		t.Error("quarantine moved the wrong objects")
	}
	missing := [32]byte{1}
	rep, err = s.VerifyAll(context.Background(), VerifyOptions{Digests: [][32]byte{ds[1], missing, ds[3]}})
	if err != nil || rep.Checked != 1 || len(rep.Missing) != 2 || len(rep.Bad) != 0 {
		t.Errorf("VerifyAll(subset) = %+v, %v", rep, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.VerifyAll(ctx, VerifyOptions{}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled VerifyAll: %v", err)
	}
	if err := s.Remove(ds[4]); err != nil || s.Has(ds[4]) {
		t.Errorf("Remove: %v", err)
	}
	if err := s.Remove(ds[4]); err != nil {
		t.Errorf("Remove of a missing object: %v", err)
	}
}

// TestObjectDir opens a bare digest store laid out as mkcomposefs
// --digest-store does, named by the fsverity tool.
func TestObjectDir(t *testing.T) {
	dir := t.TempDir()
	var want [][32]byte
	for i := range 5 {
		c := randomBytes(i*3000+1, uint64(400+i))
		tmp := filepath.Join(t.TempDir(), "f")
		os.WriteFile(tmp, c, 0o644)
		d := toolDigest(t, tmp)
		p := filepath.Join(dir, hex.EncodeToString(d[:1]), hex.EncodeToString(d[1:]))
		os.MkdirAll(filepath.Dir(p), 0o755)
		os.WriteFile(p, c, 0o644)
		want = append(want, d)
	}
	s, err := OpenObjectDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if s.ObjectsDir() != dir {
		t.Error(s.ObjectsDir())
	}
	n := 0
	err = s.Walk(func(d [32]byte, size int64) error {
		n++
		return s.Verify(d)
	})
	if err != nil || n != len(want) {
		t.Fatalf("Walk: %d objects, %v", n, err)
	}
	for _, d := range want {
		if !s.Has(d) {
			t.Errorf("Has(%s) false", Payload(d))
		}
	}
	d, err := s.PutBytes([]byte("new object in a bare store"))
	if err != nil {
		t.Fatal(err)
	}
	checkObject(t, s, d, []byte("new object in a bare store"))
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenObjectDir(filepath.Join(dir, "missing")); err == nil {
		t.Error("OpenObjectDir of a missing directory succeeded")
	}
	if _, err := s.Lock(); err == nil {
		t.Error("Lock on a bare store succeeded")
	}
}

func TestLock(t *testing.T) {
	s := newStore(t)
	l, err := s.Lock()
	if err != nil {
		t.Fatal(err)
	}
	lockPath := filepath.Join(s.Root(), "lock")
	if _, err := TryRLock(lockPath); !errors.Is(err, ErrLocked) {
		t.Errorf("TryRLock while exclusively locked: %v", err)
	}
	l.Unlock()
	r1, err := s.RLock()
	if err != nil {
		t.Fatal(err)
	}
	r2, err := TryRLock(lockPath)
	if err != nil {
		t.Errorf("second shared lock: %v", err)
	}
	if _, err := TryLock(lockPath); !errors.Is(err, ErrLocked) {
		t.Errorf("TryLock while shared-locked: %v", err)
	}
	r1.Unlock()
	r2.Unlock()
	x, err := TryLock(lockPath)
	if err != nil {
		t.Errorf("TryLock after unlock: %v", err)
	}
	x.Unlock()
}

// TestTmpfs: a store on tmpfs (no fs-verity, no reflink) works the same.
func TestTmpfs(t *testing.T) {
	if st, err := os.Stat("/dev/shm"); err != nil || !st.IsDir() {
		t.Skip("no /dev/shm")
	}
	dir, err := os.MkdirTemp("/dev/shm", "mossfs-cas-test-")
	if err != nil {
		t.Skip(err)
	}
	defer os.RemoveAll(dir)
	s, err := Create(dir)
	if err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(dir, "src")
	for i, size := range []int{1, 5000, 3 * smallMax} {
		data := randomBytes(size, uint64(500+i))
		os.WriteFile(src, data, 0o644)
		d, err := s.PutFile(src)
		if err != nil {
			t.Fatal(err)
		}
		checkObject(t, s, d, data)
	}
	if sup, known := s.VeritySupported(); sup || !known {
		t.Errorf("VeritySupported on tmpfs = %v, %v; want false, true", sup, known)
	}
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	if st := strays(t, s); len(st) != 0 {
		t.Errorf("strays: %v", st)
	}
}

// Crash test, driven from the VM harness (kvmtests): boot 1 runs
// TestCrashWriter with MOSSFS_CAS_CRASH_DIR set to a store on the guest's
// ext4 disk; it syncs a first batch, writes a second one without Sync,
// prints CAS-CRASH-WRITTEN on stdout and waits to be killed (QEMU is killed:
// a power cut). Boot 2 runs TestCrashCheck on the same disk: the synced
// batch must be intact; Recover must find the unsynced batch and leave only
// objects whose content matches their name.
const crashEnv = "MOSSFS_CAS_CRASH_DIR"

func crashContents(batch int) [][]byte {
	var out [][]byte
	for i := range 300 {
		out = append(out, randomBytes(i*613+4000, uint64(batch*10000+i)))
	}
	return out
}

func TestCrashWriter(t *testing.T) {
	dir := os.Getenv(crashEnv)
	if dir == "" {
		t.Skip("run by the VM crash test (" + crashEnv + ")")
	}
	s, err := Create(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range crashContents(1) {
		if _, err := s.PutBytes(c); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	for _, c := range crashContents(2) {
		if _, err := s.PutBytes(c); err != nil {
			t.Fatal(err)
		}
	}
	fmt.Println("CAS-CRASH-WRITTEN")
	os.Stdout.Sync()
	time.Sleep(time.Hour) // until the power cut
}

func TestCrashCheck(t *testing.T) {
	dir := os.Getenv(crashEnv)
	if dir == "" {
		t.Skip("run by the VM crash test (" + crashEnv + ")")
	}
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range crashContents(1) {
		d := fsverity.Sum(c)
		if err := s.Verify(d); err != nil {
			t.Errorf("synced object lost or damaged by the crash: %v", err)
		}
	}
	if !s.NeedsRecovery() {
		t.Fatal("after a power cut with an unsynced batch, NeedsRecovery is false")
	}
	rep, err := s.Recover(context.Background(), VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Recover: checked %d, bad %d, quarantined %d", rep.Checked, len(rep.Bad), rep.Quarantined)
	full, err := s.VerifyAll(context.Background(), VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(full.Bad) != 0 {
		t.Errorf("bad objects left after Recover: %+v", full.Bad)
	}
	survived := 0
	for _, c := range crashContents(2) {
		if s.Has(fsverity.Sum(c)) {
			survived++
		}
	}
	t.Logf("unsynced batch: %d of %d objects survived the power cut intact", survived, len(crashContents(2)))
	if s.NeedsRecovery() {
		t.Error("NeedsRecovery still true after Recover")
	}
}

// TestStoreIsPrivate: a store made by Create is reachable only by its
// owner (directories 0700, objects 0600), and an object stored from a
// world-readable file is a new inode: the source keeps its inode, links
// and mode, so the store never shares an inode whose mode others see.
func TestStoreIsPrivate(t *testing.T) {
	s := newStore(t)
	src := t.TempDir()
	small := filepath.Join(src, "small")
	large := filepath.Join(src, "large")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(small, []byte("world-readable source\n"), 0o644))
	must(os.WriteFile(large, bytes.Repeat([]byte("a large world-readable source, cloned or copied\n"), 64<<10), 0o644))
	for _, p := range []string{small, large} {
		must(os.Chmod(p, 0o644))
		d, err := s.PutFile(p)
		must(err)
		var obj, srcSt unix.Stat_t
		must(unix.Stat(s.ObjectPath(d), &obj))
		must(unix.Stat(p, &srcSt))
		if obj.Ino == srcSt.Ino && obj.Dev == srcSt.Dev {
			t.Errorf("%s: the object is a hardlink of the source", p)
		}
		if obj.Mode&0o777 != 0o600 || obj.Nlink != 1 {
			t.Errorf("%s: object mode %o, %d links; want 0600 and 1", p, obj.Mode&0o777, obj.Nlink)
		}
		if srcSt.Mode&0o777 != 0o644 || srcSt.Nlink != 1 {
			t.Errorf("%s: source mode %o, %d links after storing; want 0644 and 1", p, srcSt.Mode&0o777, srcSt.Nlink)
		}
	}
	d, err := s.PutBytes([]byte("through PutBytes"))
	must(err)
	for _, p := range []string{s.Root(), s.ObjectsDir(), filepath.Dir(s.ObjectPath(d)), filepath.Join(s.Root(), "pending")} {
		st, err := os.Stat(p)
		must(err)
		if st.Mode().Perm() != 0o700 {
			t.Errorf("%s: mode %v, want 0700", p, st.Mode().Perm())
		}
	}
	// A bare digest store keeps mkcomposefs's modes.
	bare := filepath.Join(t.TempDir(), "digests")
	must(os.Mkdir(bare, 0o755))
	b, err := OpenObjectDir(bare)
	must(err)
	d, err = b.PutBytes([]byte("in a digest store"))
	must(err)
	if st, err := os.Stat(b.ObjectPath(d)); err != nil || st.Mode().Perm() != 0o644 {
		t.Errorf("digest store object: %v %v, want mode 0644", st.Mode(), err)
	}
}

// TestUnsynced: a store is unsynced from the first object of a batch until
// Sync, and while another process's batch is pending (running or crashed);
// an object that was already there starts no batch.
func TestUnsynced(t *testing.T) {
	s := newStore(t)
	if s.Unsynced() {
		t.Fatal("a new store is unsynced")
	}
	data := []byte("an object of the first batch, long enough to be one")
	if _, err := s.PutBytes(data); err != nil {
		t.Fatal(err)
	}
	if !s.Unsynced() {
		t.Fatal("synced with an object not yet synced")
	}
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	if s.Unsynced() {
		t.Fatal("unsynced after Sync")
	}
	if _, err := s.PutBytes(data); err != nil {
		t.Fatal(err)
	}
	if s.Unsynced() {
		t.Fatal("storing an object that is there started a batch")
	}
	// Another process's batch, still running, and then crashed.
	other, err := Open(s.Root())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.PutBytes([]byte("another writer's object, not synced")); err != nil {
		t.Fatal(err)
	}
	if !s.Unsynced() {
		t.Fatal("synced while another writer's batch is pending")
	}
	child := startChild(t, s.Root(), false) // exits without Sync
	if err := child.Wait(); err != nil {
		t.Fatal(err)
	}
	if err := other.Sync(); err != nil {
		t.Fatal(err)
	}
	if !s.Unsynced() {
		t.Fatal("synced while a crashed writer's batch is pending")
	}
	if _, err := s.Recover(context.Background(), VerifyOptions{}); err != nil {
		t.Fatal(err)
	}
	if s.Unsynced() {
		t.Fatal("unsynced after recovery")
	}
}

// PutHow says whether it wrote the object or found it, and its digests are
// the fsverity tool's, in memory and streamed (past smallMax) alike.
func TestPutHow(t *testing.T) {
	src := t.TempDir()
	for i, size := range putSizes {
		data := randomBytes(size, uint64(100+i))
		path := filepath.Join(src, strconv.Itoa(size))
		os.WriteFile(path, data, 0o600)
		want := toolDigest(t, path)
		s := newStore(t)
		d, how, err := s.PutHow(bytes.NewReader(data))
		if err != nil || d != want || how != Copied {
			t.Fatalf("PutHow(%d bytes) = %x, %v, %v; want %x, copied", size, d, how, err, want)
		}
		checkObject(t, s, d, data)
		if d, how, err = s.PutHow(io.MultiReader(bytes.NewReader(data[:size/2]), bytes.NewReader(data[size/2:]))); err != nil || d != want || how != Present {
			t.Fatalf("PutHow(%d bytes) again = %x, %v, %v; want present", size, d, how, err)
		}
		checkObject(t, s, d, data)
	}
}
