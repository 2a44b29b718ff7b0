package mounttuck

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mossfs/mossfs/internal/testenv"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) { testenv.MainInMountNS(m) }

// detachedTmpfs returns a detached tmpfs mount holding a file "marker"
// with the given content.
func detachedTmpfs(t testing.TB, marker string) int {
	t.Helper()
	fsfd, err := unix.Fsopen("tmpfs", unix.FSOPEN_CLOEXEC)
	if err != nil {
		t.Fatalf("fsopen tmpfs: %v", err)
	}
	defer unix.Close(fsfd)
	if err := unix.FsconfigSetString(fsfd, "source", "mounttuck-test"); err != nil {
		t.Fatal(err)
	}
	if err := unix.FsconfigCreate(fsfd); err != nil {
		t.Fatal(err)
	}
	mfd, err := unix.Fsmount(fsfd, unix.FSMOUNT_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("fsmount: %v", err)
	}
	if err := os.WriteFile(fmt.Sprintf("/proc/self/fd/%d/marker", mfd), []byte(marker), 0o644); err != nil {
		t.Fatal(err)
	}
	return mfd
}

func mountsAt(t testing.TB, path string) []MountEntry {
	t.Helper()
	m, err := MountsAt(path)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func readMarker(t testing.TB, dir string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "marker"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// scratch returns an empty directory on a fresh tmpfs (so the target's
// parent mount is an ordinary mount, not the namespace root).
func scratch(t *testing.T) string {
	t.Helper()
	testenv.RequireMountNS(t)
	dir := t.TempDir()
	if err := unix.Mount("scratch", dir, "tmpfs", 0, ""); err != nil {
		t.Fatalf("mount scratch tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	target := filepath.Join(dir, "target")
	if err := os.Mkdir(target, 0o755); err != nil {
		t.Fatal(err)
	}
	return target
}

func TestSwitchNothingMountedIsPlainMount(t *testing.T) {
	target := scratch(t)
	fd := detachedTmpfs(t, "one")
	defer unix.Close(fd)
	res, err := Switch(fd, target)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Plain {
		t.Errorf("Plain = false for an empty target")
	}
	if got := readMarker(t, target); got != "one" {
		t.Errorf("marker = %q, want one", got)
	}
	if n := len(mountsAt(t, target)); n != 1 {
		t.Errorf("%d mounts at target, want 1", n)
	}
}

func TestSwitchReplacesWithoutPilingUp(t *testing.T) {
	target := scratch(t)
	const n = 200
	var prevID int
	for i := range n {
		fd := detachedTmpfs(t, fmt.Sprint(i))
		res, err := Switch(fd, target)
		unix.Close(fd)
		if err != nil {
			t.Fatalf("switch %d: %v", i, err)
		}
		if res.Plain != (i == 0) {
			t.Fatalf("switch %d: Plain = %v", i, res.Plain)
		}
		if i > 0 && res.OldMountID != uint64(prevID) {
			t.Fatalf("switch %d: replaced mount %d, want %d", i, res.OldMountID, prevID)
		}
		m := mountsAt(t, target)
		if len(m) != 1 {
			t.Fatalf("switch %d: %d mounts at target", i, len(m))
		}
		prevID = m[0].ID
		if got := readMarker(t, target); got != fmt.Sprint(i) {
			t.Fatalf("switch %d: marker %q", i, got)
		}
	}
	if m := mountsAt(t, target); len(m) != 1 {
		t.Fatalf("after %d switches %d mounts at target: %+v", n, len(m), m)
	}
}

func TestSwitchKeepsOpenFilesOnOldTree(t *testing.T) {
	target := scratch(t)
	fd := detachedTmpfs(t, "old")
	Switch(fd, target)
	unix.Close(fd)
	f, err := os.Open(filepath.Join(target, "marker"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dir, err := os.Open(target)
	if err != nil {
		t.Fatal(err)
	}
	defer dir.Close()

	fd = detachedTmpfs(t, "new")
	defer unix.Close(fd)
	if _, err := Switch(fd, target); err != nil {
		t.Fatal(err)
	}
	if got := readMarker(t, target); got != "new" {
		t.Errorf("new open reads %q, want new", got)
	}
	buf := make([]byte, 16)
	n, err := f.ReadAt(buf, 0)
	if string(buf[:n]) != "old" {
		t.Errorf("file opened before the switch reads %q (%v), want old", buf[:n], err)
	}
	// A directory opened before keeps naming the old tree.
	old, err := os.ReadFile(fmt.Sprintf("/proc/self/fd/%d/marker", dir.Fd()))
	if err != nil || string(old) != "old" {
		t.Errorf("through the old directory: %q, %v", old, err)
	}
}

func TestSwitchFailureBeforeLastStepKeepsOldMount(t *testing.T) {
	target := scratch(t)
	fd := detachedTmpfs(t, "old")
	Switch(fd, target)
	unix.Close(fd)
	before := mountsAt(t, target)

	injected := errors.New("injected failure")
	testHook = func(step string) error {
		if step == stepBeneath {
			return injected
		}
		return nil
	}
	fd = detachedTmpfs(t, "new")
	_, err := Switch(fd, target)
	testHook = nil
	unix.Close(fd)
	if !errors.Is(err, injected) {
		t.Fatalf("Switch error = %v, want the injected failure", err)
	}
	checkUnchanged(t, target, before)

	// A real kernel failure: a descriptor that is not a mount.
	f, err := os.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	_, err = Switch(int(f.Fd()), target)
	f.Close()
	if err == nil {
		t.Fatal("Switch with a plain directory descriptor succeeded")
	}
	checkUnchanged(t, target, before)
}

func checkUnchanged(t *testing.T, target string, before []MountEntry) {
	t.Helper()
	after := mountsAt(t, target)
	if len(after) != len(before) || after[0].ID != before[0].ID {
		t.Fatalf("mounts at target changed: before %+v, after %+v", before, after)
	}
	if got := readMarker(t, target); got != "old" {
		t.Fatalf("marker = %q, want old", got)
	}
}

func TestSwitchNamespaceRootIsRefused(t *testing.T) {
	testenv.RequireMountNS(t)
	before, err := ReadMountInfo()
	if err != nil {
		t.Fatal(err)
	}
	fd := detachedTmpfs(t, "x")
	defer unix.Close(fd)
	_, err = Switch(fd, "/")
	if !errors.Is(err, ErrNamespaceRoot) {
		t.Fatalf("Switch(/) error = %v, want ErrNamespaceRoot", err)
	}
	t.Logf("error: %v", err)
	after, _ := ReadMountInfo()
	if len(after) != len(before) {
		t.Fatalf("mount table changed: %d → %d entries", len(before), len(after))
	}
}

func TestSwitchSharedPropagationIsRefused(t *testing.T) {
	target := scratch(t)
	// A shared tmpfs with a bind of itself on top: the top is a peer of its
	// parent, so anything mounted beneath would be propagated over again.
	if err := unix.Mount("shared-test", target, "tmpfs", 0, ""); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(target, "marker"), []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("", target, "", unix.MS_SHARED, ""); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(target, target, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	before := mountsAt(t, target)
	fd := detachedTmpfs(t, "new")
	defer unix.Close(fd)
	_, err := Switch(fd, target)
	if !errors.Is(err, ErrPropagation) {
		t.Fatalf("Switch error = %v, want ErrPropagation", err)
	}
	if !strings.Contains(err.Error(), "unchanged") {
		t.Errorf("error does not say the old mount is unchanged: %v", err)
	}
	after := mountsAt(t, target)
	if len(after) != len(before) {
		t.Fatalf("mounts changed: %+v → %+v", before, after)
	}
	if got := readMarker(t, target); got != "old" {
		t.Fatalf("marker %q", got)
	}
}

func TestParseMountInfoLine(t *testing.T) {
	e, err := parseMountInfoLine(`36 35 98:0 /mnt1 /mnt/with\040space rw,noatime master:1 shared:7 - ext3 /dev/root rw,errors=continue`)
	if err != nil {
		t.Fatal(err)
	}
	if e.ID != 36 || e.Parent != 35 || e.MountPoint != "/mnt/with space" || e.FSType != "ext3" ||
		e.Source != "/dev/root" || e.Shared() != 7 || e.Master() != 1 || e.Root != "/mnt1" {
		t.Errorf("parsed %+v", e)
	}
	for _, bad := range []string{"", "1 2 3", "x 1 0:1 / / rw - tmpfs t rw", "1 2 0:1 / / rw shared:1 tmpfs t"} {
		if _, err := parseMountInfoLine(bad); err == nil {
			t.Errorf("%q parsed without error", bad)
		}
	}
}

// TestDiagnoseInitramfs checks the explanation for an initramfs layout,
// where the rootfs is the namespace root and a tmpfs at /t0 sits directly
// on it (kernel.md §1.1; exercised for real in the VM tests).
func TestDiagnoseInitramfs(t *testing.T) {
	var mounts []MountEntry
	for _, l := range []string{
		"1 1 0:2 / / rw - rootfs rootfs rw",
		"2 1 0:20 / /proc rw - proc proc rw",
		"5 1 0:22 / /t0 rw - tmpfs tmpfs rw",
		"6 1 0:23 / /mnt rw - tmpfs tmpfs rw",
		"7 6 0:24 / /mnt/t rw - tmpfs tmpfs rw",
	} {
		e, err := parseMountInfoLine(l)
		if err != nil {
			t.Fatal(err)
		}
		mounts = append(mounts, e)
	}
	err := diagnoseWith("/t0", unix.EINVAL, mounts[2], mounts)
	if !errors.Is(err, ErrNamespaceRoot) || !strings.Contains(err.Error(), "initramfs") {
		t.Errorf("/t0: %v", err)
	}
	err = diagnoseWith("/mnt/t", unix.EINVAL, mounts[4], mounts)
	if errors.Is(err, ErrNamespaceRoot) || errors.Is(err, ErrPropagation) || !errors.Is(err, unix.EINVAL) {
		t.Errorf("/mnt/t: %v", err)
	}
}

// TestSwitchUnderSharedParent is the systemd layout: / is shared, so the
// mount at the target propagates to the parent's peers (here a bind of the
// parent elsewhere). Switching must work there too, reach the peer, and
// leave exactly one mount at the target in both places.
func TestSwitchUnderSharedParent(t *testing.T) {
	target := scratch(t)
	parent := filepath.Dir(target)
	if err := unix.Mount("", parent, "", unix.MS_SHARED, ""); err != nil {
		t.Fatal(err)
	}
	peer := filepath.Join(t.TempDir(), "peer")
	os.Mkdir(peer, 0o755)
	if err := unix.Mount(parent, peer, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(peer, unix.MNT_DETACH)
	peerTarget := filepath.Join(peer, filepath.Base(target))
	for i := range 20 {
		fd := detachedTmpfs(t, fmt.Sprint(i))
		_, err := Switch(fd, target)
		unix.Close(fd)
		if err != nil {
			t.Fatalf("switch %d: %v", i, err)
		}
		for _, dir := range []string{target, peerTarget} {
			if got := readMarker(t, dir); got != fmt.Sprint(i) {
				t.Fatalf("switch %d: %s reads %q", i, dir, got)
			}
			if m := mountsAt(t, dir); len(m) != 1 {
				t.Fatalf("switch %d: %d mounts at %s: %+v", i, len(m), dir, m)
			}
		}
	}
}

func TestBeneathSupported(t *testing.T) {
	var uts unix.Utsname
	unix.Uname(&uts)
	var major, minor int
	fmt.Sscanf(unix.ByteSliceToString(uts.Release[:]), "%d.%d", &major, &minor)
	want := major > 6 || major == 6 && minor >= 5
	if got := BeneathSupported(); got != want {
		t.Errorf("BeneathSupported() = %v on kernel %d.%d", got, major, minor)
	}
}

func FuzzParseMountInfoLine(f *testing.F) {
	f.Add(`36 35 98:0 /mnt1 /mnt/with\040space rw,noatime master:1 shared:7 - ext3 /dev/root rw,errors=continue`)
	f.Add(`27 1 254:0 / / rw,relatime - ext4 /dev/vda rw`)
	f.Add(`1 1 0:2 / / rw - rootfs rootfs rw`)
	f.Fuzz(func(t *testing.T, line string) {
		e, err := parseMountInfoLine(line)
		if err == nil && (e.FSType == "" && e.Source == "") {
			t.Errorf("%q parsed without type and source", line)
		}
		_ = unescapeOctal(line)
	})
}

// TestTopAtMatchesMountTable: TopAt, which asks the kernel about one mount
// (statmount), names the same top mount as the mount table does, for a
// directory with nothing on it, one mount, two stacked (the tuck's
// moment) and an overlay with a source of its own. (A type with a
// subtype, fuse.mossfs, is what cmd/mossfs's FUSE switch tests replace.)
func TestTopAtMatchesMountTable(t *testing.T) {
	target := scratch(t)
	check := func(what string, wantMounted bool) {
		t.Helper()
		m, mounted, err := TopAt(target)
		if err != nil || mounted != wantMounted {
			t.Fatalf("%s: TopAt: %+v, mounted %v, %v", what, m, mounted, err)
		}
		if _, _, fast := topAtStatmount(target); !fast && kernelAtLeast(t, 6, 15) {
			t.Errorf("%s: statmount did not answer on this kernel (6.15+ has all it needs)", what)
		}
		all := mountsAt(t, target)
		if !mounted {
			if len(all) != 0 {
				t.Errorf("%s: TopAt says nothing is mounted, the mount table lists %+v", what, all)
			}
			return
		}
		var top *MountEntry
		for i := range all {
			covered := false
			for _, o := range all {
				if o.Parent == all[i].ID {
					covered = true
				}
			}
			if !covered {
				top = &all[i]
			}
		}
		if top == nil || top.ID != m.ID || top.Parent != m.Parent || top.FSType != m.FSType || top.Source != m.Source || top.MountPoint != m.MountPoint {
			t.Errorf("%s: TopAt %+v, mount table %+v", what, m, top)
		}
	}
	check("nothing mounted", false)
	if err := unix.Mount("first", target, "tmpfs", 0, ""); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(target, unix.MNT_DETACH)
	check("one tmpfs", true)
	if err := unix.Mount("second", target, "tmpfs", 0, ""); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(target, unix.MNT_DETACH)
	check("two stacked", true)
	lower1, lower2 := t.TempDir(), t.TempDir()
	if err := unix.Mount("mossfs", target, "overlay", unix.MS_RDONLY, "lowerdir="+lower1+":"+lower2); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(target, unix.MNT_DETACH)
	check("overlay", true)
	if m, _, _ := TopAt(target); m.FSType != "overlay" || m.Source != "mossfs" {
		t.Errorf("overlay: TopAt %+v", m)
	}
}

// kernelAtLeast reports whether the running kernel is major.minor or newer.
func kernelAtLeast(t *testing.T, major, minor int) bool {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		t.Fatal(err)
	}
	var maj, min int
	fmt.Sscanf(unix.ByteSliceToString(u.Release[:]), "%d.%d", &maj, &min)
	return maj > major || maj == major && min >= minor
}
