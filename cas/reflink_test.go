package cas

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mossfs/mossfs/internal/testenv"
	"golang.org/x/sys/unix"
)

// TestMain runs the package's tests in a private mount namespace (as root),
// so TestReflinkXFS can mount its scratch file system without touching the
// host's mounts.
func TestMain(m *testing.M) { testenv.MainInMountNS(m) }

// TestReflinkXFS stores large files on a reflink-capable file system (XFS
// on a loop device): a file on the same file system is cloned, which the
// file system itself confirms (filefrag reports the object's extents as
// shared), and one from another file system falls back to copying; both
// objects read back right.
func TestReflinkXFS(t *testing.T) {
	testenv.RequireMountNS(t)
	if _, err := exec.LookPath("mkfs.xfs"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("mkfs.xfs missing (xfsprogs; make test installs it)")
		}
		t.Skip("mkfs.xfs missing (xfsprogs)")
	}
	tmp := t.TempDir()
	img := filepath.Join(tmp, "xfs.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 512<<20); err != nil {
		t.Fatal(err)
	}
	run := func(name string, args ...string) string {
		t.Helper()
		out, err := exec.Command(name, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	run("mkfs.xfs", "-q", "-m", "reflink=1", img)
	mnt := filepath.Join(tmp, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	run("mount", "-o", "loop", img, mnt)
	t.Cleanup(func() { unix.Unmount(mnt, unix.MNT_DETACH) })

	s, err := Create(filepath.Join(mnt, "store"))
	if err != nil {
		t.Fatal(err)
	}
	same := randomBytes(3*smallMax+12345, 901)
	src := filepath.Join(mnt, "big")
	if err := os.WriteFile(src, same, 0o644); err != nil {
		t.Fatal(err)
	}
	d, err := s.PutFile(src)
	if err != nil {
		t.Fatal(err)
	}
	checkObject(t, s, d, same)
	if got := s.reflink.Load(); got != yes {
		t.Fatalf("reflink state %d after a store on XFS, want yes (%d)", got, yes)
	}
	// The file system's own view: the object's extents are shared with the source.
	run("sync")
	if out := run("filefrag", "-v", s.ObjectPath(d)); !strings.Contains(out, "shared") {
		t.Errorf("object extents not shared with the source:\n%s", out)
	}

	// From another file system FICLONE fails with EXDEV: copied instead.
	other := randomBytes(2*smallMax+777, 902)
	src2 := filepath.Join(tmp, "other")
	if err := os.WriteFile(src2, other, 0o644); err != nil {
		t.Fatal(err)
	}
	d2, err := s.PutFile(src2)
	if err != nil {
		t.Fatal(err)
	}
	checkObject(t, s, d2, other)
	if out := run("filefrag", "-v", s.ObjectPath(d2)); strings.Contains(out, "shared") {
		t.Errorf("copied object reported as shared:\n%s", out)
	}
	if got := s.reflink.Load(); got != yes {
		t.Errorf("reflink state %d after a cross-file-system copy, want it to stay yes", got)
	}
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
}
