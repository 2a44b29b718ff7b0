package bgclose

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
	"unsafe"

	"github.com/mossfs/mossfs/internal/testenv"
	"github.com/mossfs/mossfs/internal/uring"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) { testenv.MainInMountNS(m) }

// unmountWatch is a tmpfs with some files, unmounted lazily while a
// descriptor of its root (returned) holds the last reference to it, and an
// inotify descriptor that gets IN_UNMOUNT when the kernel tears it down.
func unmountWatch(t *testing.T) (ref, ino int) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("bgclose-test", dir, "tmpfs", 0, "size=4m"); err != nil {
		t.Fatal(err)
	}
	for i := range 200 {
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprint(i)), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ino, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(ino) })
	if _, err := unix.InotifyAddWatch(ino, dir, unix.IN_DELETE_SELF); err != nil {
		t.Fatal(err)
	}
	ref, err = unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
		t.Fatal(err)
	}
	return ref, ino
}

// unmounted reports whether ino has IN_UNMOUNT queued: the tmpfs is torn
// down.
func unmounted(t *testing.T, ino int) bool {
	t.Helper()
	var buf [4096]byte
	n, err := unix.Read(ino, buf[:])
	if errors.Is(err, unix.EAGAIN) {
		return false
	}
	if err != nil {
		t.Fatal(err)
	}
	for b := buf[:n]; len(b) >= unix.SizeofInotifyEvent; {
		ev := (*unix.InotifyEvent)(unsafe.Pointer(&b[0]))
		if ev.Mask&unix.IN_UNMOUNT != 0 {
			return true
		}
		b = b[unix.SizeofInotifyEvent+int(ev.Len):]
	}
	return false
}

// TestReleaseTearsDownElsewhere: a plain close of the last reference to an
// unmounted tmpfs tears it down before close returns (IN_UNMOUNT is
// queued at once: the control, which shows that the check can tell);
// Release returns before that happens, and the kernel still tears it down
// soon after, in a worker. A worker could win the race against the check
// right after Release on a machine busy enough to stop this thread for a
// few ticks, so Release gets three tries to show it.
func TestReleaseTearsDownElsewhere(t *testing.T) {
	ref, ino := unmountWatch(t)
	unix.Close(ref)
	if !unmounted(t, ino) {
		t.Fatal("control: a plain close of the last reference returned before the tmpfs was torn down; the check cannot tell")
	}
	deferred := false
	for try := 0; try < 3 && !deferred; try++ {
		ref, ino := unmountWatch(t)
		if !Release(ref) {
			if err := probe(); err != nil {
				t.Skipf("io_uring is not available here: %v", err)
			}
			t.Fatal("Release refused a descriptor opened for reading")
		}
		if unmounted(t, ino) {
			continue
		}
		deferred = true
		for end := time.Now().Add(10 * time.Second); !unmounted(t, ino); time.Sleep(5 * time.Millisecond) {
			if time.Now().After(end) {
				t.Fatal("the tmpfs released was not torn down within 10 s")
			}
		}
	}
	if !deferred {
		t.Error("three times the tmpfs was torn down by the time Release returned: it was not left to a worker")
	}
}

// TestReleaseLeavesPathDescriptors: io_uring takes no O_PATH descriptors;
// Release then closes nothing and says so.
func TestReleaseLeavesPathDescriptors(t *testing.T) {
	if err := probe(); err != nil {
		t.Skipf("io_uring is not available here: %v", err)
	}
	a, err := unix.Open(t.TempDir(), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	p, err := unix.Open(t.TempDir(), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if Release(a, p) {
		t.Fatal("Release took an O_PATH descriptor")
	}
	for _, fd := range []int{a, p} {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil {
			t.Errorf("descriptor %d closed by a Release that reported false: %v", fd, err)
		}
		unix.Close(fd)
	}
	if !Release() {
		t.Error("Release of nothing reported false")
	}
}

// probe says why io_uring cannot be had, if it cannot.
func probe() error {
	var p uring.Params
	ring, err := uring.Setup(1, &p)
	if err != nil {
		return err
	}
	unix.Close(ring)
	return nil
}
