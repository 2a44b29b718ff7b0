package durable

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"unsafe"

	"github.com/mossfs/mossfs/internal/testenv"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) { testenv.MainInMountNS(m) }

// fsIocShutdown is FS_IOC_SHUTDOWN (_IOR('X', 125, __u32)), and
// shutdownNoLogFlush its flag that stops the file system at once: nothing
// more reaches the disk, neither dirty pages nor the running journal
// transaction. What the file system shows after a remount is what a power
// cut at that moment would have left (xfstests' godown does the same).
const (
	fsIocShutdown      = 0x8004587d
	shutdownNoLogFlush = 2
)

// crashFS is an ext4 file system on a loop device, mounted so that only an
// explicit sync makes anything durable: a journal commit every 60 s, and
// noauto_da_alloc (no implicit flush of a file's data when it replaces
// another by rename).
type crashFS struct {
	t        *testing.T
	img, mnt string
}

func newCrashFS(t *testing.T) *crashFS {
	testenv.RequireMountNS(t)
	for _, tool := range []string{"mkfs.ext4", "mount", "umount"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s: %v (scripts/install-deps.sh installs e2fsprogs and util-linux)", tool, err)
		}
	}
	dir := t.TempDir()
	c := &crashFS{t: t, img: filepath.Join(dir, "ext4.img"), mnt: filepath.Join(dir, "mnt")}
	if err := os.Mkdir(c.mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	c.run("mkfs.ext4", "-q", "-F", c.img, "16M")
	c.mount()
	t.Cleanup(func() { unix.Unmount(c.mnt, unix.MNT_DETACH) })
	return c
}

func (c *crashFS) run(name string, args ...string) {
	c.t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		c.t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
}

func (c *crashFS) mount() {
	c.t.Helper()
	c.run("mount", "-t", "ext4", "-o", "loop,commit=60,noauto_da_alloc", c.img, c.mnt)
}

// sync makes everything so far durable (the starting state).
func (c *crashFS) sync() {
	c.t.Helper()
	fd, err := unix.Open(c.mnt, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		c.t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Syncfs(fd); err != nil {
		c.t.Fatal(err)
	}
}

// crash shuts the file system down without flushing anything and mounts
// it again.
func (c *crashFS) crash() {
	c.t.Helper()
	fd, err := unix.Open(c.mnt, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		c.t.Fatal(err)
	}
	flag := uint32(shutdownNoLogFlush)
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), fsIocShutdown, uintptr(unsafe.Pointer(&flag)))
	unix.Close(fd)
	if errno != 0 {
		c.t.Fatalf("FS_IOC_SHUTDOWN: %v", errno)
	}
	c.run("umount", c.mnt)
	c.mount()
}

// batch is what mossfs switch writes: files replaced in three directories,
// one of them new.
//
// With swap, the files are written with Swap, and once before the batch,
// so that the batch writes into swap files holding content other than the
// old (the content before that), as every switch after the first does.
func (c *crashFS) batch(swap bool) (old, new []File) {
	c.t.Helper()
	for _, d := range []string{"state/mounts", "boot/loader"} {
		if err := os.MkdirAll(filepath.Join(c.mnt, d), 0o755); err != nil {
			c.t.Fatal(err)
		}
	}
	paths := []string{"state/active", "state/mounts/usr.json", "state/mounts/.previous-active", "boot/loader/loader.conf"}
	for i, p := range paths {
		p = filepath.Join(c.mnt, p)
		old = append(old, File{Path: p, Data: []byte("old content " + p + "\n")})
		new = append(new, File{Path: p, Data: []byte("new content, a different length " + p + "\n"), Perm: 0o600})
		if i == 2 {
			old[i].Data = nil // no such file before the batch
		}
	}
	for _, f := range old {
		if f.Data != nil {
			if err := os.WriteFile(f.Path, f.Data, 0o644); err != nil {
				c.t.Fatal(err)
			}
		}
	}
	if swap {
		for i := range old {
			if old[i].Data != nil {
				old[i].Data = []byte("mid content " + old[i].Path + "\n")
				old[i].Swap = true
				if err := Write(old[i]); err != nil {
					c.t.Fatal(err)
				}
				if _, err := os.Stat(filepath.Join(filepath.Dir(old[i].Path), SwapName(filepath.Base(old[i].Path)))); err != nil {
					c.t.Fatal(err)
				}
			}
			new[i].Swap = true
			if old[i].Data != nil {
				// As long as what the swap file holds, the content before
				// "mid": a write that changes a file's size is flushed by
				// ext4's journal commit (data=ordered) even without the
				// fsync, and the case without data fsyncs could not tell.
				new[i].Data = []byte("NEW content " + old[i].Path + "\n")
			}
		}
	}
	c.sync()
	return old, new
}

// check returns how many files have their new content, and fails the test
// if one is neither old nor new (torn, empty where it should not be).
func (c *crashFS) check(old, new []File) (newCount int, torn []string) {
	c.t.Helper()
	for i := range new {
		got, err := os.ReadFile(new[i].Path)
		switch {
		case err == nil && string(got) == string(new[i].Data):
			newCount++
		case old[i].Data == nil && os.IsNotExist(err):
		case err == nil && string(got) == string(old[i].Data):
		default:
			torn = append(torn, new[i].Path+": "+string(got))
		}
	}
	return newCount, torn
}

// TestCrashKeepsBatch: once Write returns, a crash keeps every new file
// whole; so it does once Commit returns for a batch begun with some files
// and added to later (as mossfs switch does around its mount). The same
// crash after a Write without its data fsyncs leaves empty files, and
// without its directory fsyncs the old files: the check tells each missing
// step, so it would notice one dropped from Write. The same four cases
// with swap files (File.Swap) written into again, as from a switch's
// second on.
func TestCrashKeepsBatch(t *testing.T) {
	for _, tc := range []struct {
		name              string
		dataSync, dirSync bool
		split             bool // Begin with some files, Add the rest, Commit
		swap              bool // through swap files
	}{
		{"write", true, true, false, false},
		{"begin, add, commit", true, true, true, false},
		{"without data fsync", false, true, false, false},
		{"without directory fsync", true, false, false, false},
		{"swap files", true, true, false, true},
		{"swap files, begin, add, commit", true, true, true, true},
		{"swap files without data fsync", false, true, false, true},
		{"swap files without directory fsync", true, false, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCrashFS(t)
			old, new := c.batch(tc.swap)
			testSkip.dataSync, testSkip.dirSync = !tc.dataSync, !tc.dirSync
			var err error
			if tc.split {
				b := Begin(new[:2]...)
				b.Add(new[2:]...)
				err = b.Commit()
			} else {
				err = Write(new...)
			}
			testSkip.dataSync, testSkip.dirSync = false, false
			if err != nil {
				t.Fatal(err)
			}
			c.crash()
			n, torn := c.check(old, new)
			switch {
			case tc.dataSync && tc.dirSync:
				if n != len(new) || len(torn) > 0 {
					t.Errorf("after the crash %d of %d files are new; torn: %q", n, len(new), torn)
				}
			case !tc.dataSync:
				// The renames were committed by the directory fsync, the
				// data was not written: the crash check must see that.
				if len(torn) == 0 {
					t.Errorf("a Write without data fsyncs survived the crash intact (%d new): the check cannot tell", n)
				}
			case !tc.dirSync:
				if n == len(new) {
					t.Errorf("a Write without directory fsyncs kept every rename: the check cannot tell")
				}
			}
			for _, f := range new {
				st, err := os.Stat(f.Path)
				if err == nil && n == len(new) && st.Mode().Perm() != 0o600 {
					t.Errorf("%s: mode %v after the crash, want 0600", f.Path, st.Mode().Perm())
				}
			}
		})
	}
}
