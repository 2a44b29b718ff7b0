package fusefs

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mossfs/mossfs/internal/gentree"
	"github.com/mossfs/mossfs/internal/testenv"
	"github.com/mossfs/mossfs/overlay/overlaytest"
	"golang.org/x/sys/unix"
)

// publicDir returns a new directory that every user can enter and read,
// with its parents made so too (t.TempDir is private to root).
func publicDir(t testing.TB) string {
	t.Helper()
	d := t.TempDir()
	for p := d; p != "/" && p != os.TempDir(); p = filepath.Dir(p) {
		if err := os.Chmod(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

// buildMossfs builds the mossfs binary into dir.
func buildMossfs(t testing.TB, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "mossfs")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/mossfs/mossfs/cmd/mossfs")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building mossfs: %v\n%s", err, out)
	}
	return bin
}

// daemon is a running "mossfs fuse-serve".
type daemon struct {
	cmd    *exec.Cmd
	stderr *bytes.Buffer
	exited chan struct{}
}

// startDaemon runs "mossfs fuse-serve" and waits for its ready report, as
// mountFUSE does.
func startDaemon(t testing.TB, bin string, cred *syscall.Credential, args ...string) *daemon {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	d := &daemon{stderr: &bytes.Buffer{}, exited: make(chan struct{})}
	d.cmd = exec.Command(bin, append([]string{"fuse-serve", "--ready-fd", "3"}, args...)...)
	d.cmd.ExtraFiles = []*os.File{w}
	d.cmd.Stderr = d.stderr
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Setsid: true}
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	go func() { d.cmd.Wait(); close(d.exited) }()
	t.Cleanup(func() {
		d.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.exited:
		case <-time.After(10 * time.Second):
			d.cmd.Process.Kill()
		}
	})
	line, _ := bufio.NewReader(r).ReadString('\n')
	if !strings.HasPrefix(line, "ready") {
		<-d.exited
		t.Fatalf("daemon not ready: %q\n%s", line, d.stderr)
	}
	return d
}

// stop sends SIGTERM and waits for the daemon to exit.
func (d *daemon) stop(t testing.TB) {
	t.Helper()
	d.cmd.Process.Signal(syscall.SIGTERM)
	d.wait(t)
}

func (d *daemon) wait(t testing.TB) {
	t.Helper()
	select {
	case <-d.exited:
	case <-time.After(15 * time.Second):
		t.Fatalf("daemon did not exit\n%s", d.stderr)
	}
	if !d.cmd.ProcessState.Success() {
		t.Errorf("daemon: %v\n%s", d.cmd.ProcessState, d.stderr)
	}
}

func isMountPoint(t testing.TB, dir string) bool {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 4 && f[4] == dir {
			return true
		}
	}
	return false
}

// TestDaemon runs the real daemon as root: ready report, the mounted view,
// an in-place switch through the control socket, and a clean exit on SIGTERM.
func TestDaemon(t *testing.T) {
	testenv.RequireMountNS(t)
	dir := publicDir(t)
	bin := buildMossfs(t, dir)
	objects := filepath.Join(dir, "objects")
	txA, txB := overlaytest.Sample("a"), overlaytest.Sample("b")
	txA.WriteObjects(t, objects)
	txB.WriteObjects(t, objects)
	imgA, imgB := writeImage(t, txA.Root), writeImage(t, txB.Root)
	mnt := filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)

	d := startDaemon(t, bin, nil, "--image", imgA, "--objects", objects, "--target", mnt)
	overlaytest.Compare(t, mnt, txA)
	st, err := Query(mnt)
	if err != nil {
		t.Fatal(err)
	}
	if st.Pid != d.cmd.Process.Pid || st.Image != imgA || !st.Verify || st.Rootless {
		t.Errorf("status %+v", st)
	}
	t.Logf("status: %+v", st)
	if _, err := RequestSwitch(mnt, imgB, ""); err != nil {
		t.Fatal(err)
	}
	overlaytest.Compare(t, mnt, txB)
	if _, err := RequestSwitch(mnt, filepath.Join(dir, "no-such-image"), ""); err == nil {
		t.Error("switching to a missing image succeeded")
	}
	overlaytest.Compare(t, mnt, txB)

	d.stop(t)
	if isMountPoint(t, mnt) {
		t.Errorf("%s still mounted after SIGTERM", mnt)
	}
}

// TestDaemonSwitchBeneath: as root, a second daemon mounts beneath the first
// and unmounts it; the first exits once nothing uses its tree, a process
// holding a file of the old tree keeps reading it until then.
func TestDaemonSwitchBeneath(t *testing.T) {
	testenv.RequireMountNS(t)
	bin := buildMossfs(t, publicDir(t))
	dir := publicDir(t)
	// MOVE_MOUNT_BENEATH needs a parent mount that is not the namespace root.
	if err := unix.Mount("fusefs-test", dir, "tmpfs", 0, "mode=0755"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	bin2 := filepath.Join(dir, "mossfs")
	copyFile(t, bin, bin2)
	objects := filepath.Join(dir, "objects")
	txA, txB := overlaytest.Sample("a"), overlaytest.Sample("b")
	txA.WriteObjects(t, objects)
	txB.WriteObjects(t, objects)
	imgA, imgB := writeImage(t, txA.Root), writeImage(t, txB.Root)
	mnt := filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)

	a := startDaemon(t, bin2, nil, "--image", imgA, "--objects", objects, "--target", mnt)
	held, err := os.Open(filepath.Join(mnt, "usr/share/doc/pkg/big"))
	if err != nil {
		t.Fatal(err)
	}
	b := startDaemon(t, bin2, nil, "--image", imgB, "--objects", objects, "--target", mnt, "--beneath")
	overlaytest.Compare(t, mnt, txB)
	got := make([]byte, 20)
	if _, err := held.ReadAt(got, 0); err != nil || !bytes.HasPrefix(got, []byte("tx=a ")) {
		t.Errorf("held file of the old tree: %q %v", got, err)
	}
	held.Close()
	a.wait(t) // the old daemon exits by itself
	st, err := Query(mnt)
	if err != nil || st.Pid != b.cmd.Process.Pid {
		t.Errorf("status after the switch: %+v %v", st, err)
	}
	b.stop(t)
	if isMountPoint(t, mnt) {
		t.Errorf("%s still mounted after SIGTERM", mnt)
	}
}

func copyFile(t testing.TB, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o755); err != nil {
		t.Fatal(err)
	}
}

// accessibleDevFuse makes /dev/fuse usable by every user inside this test's
// mount namespace only (Debian's default is 0666; some hosts have 0600): a
// new node for the same device, bind-mounted over it.
func accessibleDevFuse(t testing.TB) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat("/dev/fuse", &st); err != nil {
		t.Fatalf("/dev/fuse: %v", err)
	}
	if st.Mode&0o006 == 0o006 {
		return
	}
	d := t.TempDir()
	if err := unix.Mount("fusefs-dev", d, "tmpfs", 0, "mode=0755"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(d, unix.MNT_DETACH) })
	node := filepath.Join(d, "fuse")
	if err := unix.Mknod(node, unix.S_IFCHR|0o666, int(st.Rdev)); err != nil {
		t.Fatal(err)
	}
	if err := unix.Chmod(node, 0o666); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(node, "/dev/fuse", "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount("/dev/fuse", unix.MNT_DETACH) })
}

const helperEnv = "MOSSFS_FUSEFS_HELPER"

var nobody = &syscall.Credential{Uid: 65534, Gid: 65534}

// runHelper runs TestRootlessHelper as nobody with the given request and
// decodes its JSON answer.
func runHelper(t testing.TB, testBin string, out any, args ...string) {
	t.Helper()
	cmd := exec.Command(testBin, "-test.run", "^TestRootlessHelper$", "-test.count=1")
	cmd.Env = append(os.Environ(), helperEnv+"="+strings.Join(args, "\x1f"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: nobody}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("helper %q: %v\n%s\n%s", args, err, stdout.String(), stderr.String())
	}
	s := stdout.String()
	i, j := strings.Index(s, "JSON<"), strings.Index(s, ">JSON")
	if i < 0 || j < i {
		t.Fatalf("helper %q: no answer\n%s\n%s", args, s, stderr.String())
	}
	if err := json.Unmarshal([]byte(s[i+5:j]), out); err != nil {
		t.Fatal(err)
	}
}

// TestRootlessHelper is the unprivileged side of TestRootless; it does
// nothing unless started by it.
func TestRootlessHelper(t *testing.T) {
	req := os.Getenv(helperEnv)
	if req == "" {
		t.Skip("helper of TestRootless")
	}
	args := strings.Split(req, "\x1f")
	var answer any
	switch args[0] {
	case "snapshot":
		answer = snapshot(t, args[1])
	case "switch":
		st, err := RequestSwitch(args[1], args[2], "")
		if err != nil {
			t.Fatal(err)
		}
		answer = st
	case "uid":
		answer = os.Geteuid()
	default:
		t.Fatalf("unknown helper request %q", args[0])
	}
	b, err := json.Marshal(answer)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("JSON<%s>JSON\n", b)
}

// TestRootless mounts a transaction as an unprivileged user (uid 65534,
// through fusermount3): the user sees what the kernel overlay shows root,
// can switch it in place, and SIGTERM unmounts it.
func TestRootless(t *testing.T) {
	testenv.RequireMountNS(t)
	if _, err := exec.LookPath("fusermount3"); err != nil {
		t.Fatalf("fusermount3 not installed (scripts/install-deps.sh): %v", err)
	}
	accessibleDevFuse(t)
	dir := publicDir(t)
	bin := buildMossfs(t, dir)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	testBin := filepath.Join(dir, "fusefs.test")
	copyFile(t, self, testBin)
	var uid int
	runHelper(t, testBin, &uid, "uid")
	if uid != 65534 {
		t.Fatalf("helper runs as uid %d", uid)
	}

	imgA, objects := gentreeImage(t, gentree.Tiny)
	spec := gentree.Tiny
	spec.Seed = 2
	imgB, objectsB := gentreeImage(t, spec)
	// One object directory for both, readable by everyone.
	pubObjects := filepath.Join(dir, "objects")
	for _, src := range []string{objects, objectsB} {
		if out, err := exec.Command("cp", "-a", "--no-preserve=ownership", src+"/.", pubObjects).CombinedOutput(); err != nil {
			t.Fatalf("cp: %v\n%s", err, out)
		}
	}
	pubA, pubB := filepath.Join(dir, "a.cfs"), filepath.Join(dir, "b.cfs")
	copyFile(t, imgA, pubA)
	copyFile(t, imgB, pubB)
	if out, err := exec.Command("chmod", "-R", "a+rX", dir).CombinedOutput(); err != nil {
		t.Fatalf("chmod: %v\n%s", err, out)
	}
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(mnt, 65534, 65534); err != nil {
		t.Fatal(err)
	}

	d := startDaemon(t, bin, nobody, "--image", pubA, "--objects", pubObjects, "--target", mnt)
	if !isMountPoint(t, mnt) {
		t.Fatalf("%s is not a mount point", mnt)
	}
	var view map[string]entry
	runHelper(t, testBin, &view, "snapshot", mnt)
	compareSnapshots(t, view, snapshot(t, mountOverlay(t, pubA, pubObjects)))

	var st Status
	runHelper(t, testBin, &st, "switch", mnt, pubB)
	if !st.Rootless || st.Image != pubB {
		t.Errorf("status after the switch: %+v", st)
	}
	t.Logf("rootless status: %+v", st)
	view = nil
	runHelper(t, testBin, &view, "snapshot", mnt)
	compareSnapshots(t, view, snapshot(t, mountOverlay(t, pubB, pubObjects)))

	d.stop(t)
	if isMountPoint(t, mnt) {
		t.Errorf("%s still mounted after SIGTERM", mnt)
	}
}
