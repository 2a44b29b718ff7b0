package adopt

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mossfs/mossfs/fsverity"
	"github.com/mossfs/mossfs/internal/state"
	"github.com/mossfs/mossfs/internal/testenv"
	"golang.org/x/sys/unix"
)

// bigInstall has one state with a few large files (content that compresses
// badly, so it takes its size on any file system).
func bigInstall(t testing.TB) *tInstall {
	var rows []tRow
	for i := range 4 {
		data := make([]byte, 3<<20+i*4096)
		x := uint64(0x9e3779b97f4a7c15 * uint64(i+1))
		for j := range data {
			x ^= x << 13
			x ^= x >> 7
			x ^= x << 17
			data[j] = byte(x)
		}
		rows = append(rows, tRow{typ: "regular", path: "lib/big" + string(rune('a'+i)), mode: 0o644, data: data})
	}
	p := genPkg("big", rows...)
	return &tInstall{pkgs: []tPkg{baselayout, p}, states: [][]string{{baselayout.id, p.id}}}
}

func scratchFS(t *testing.T, fstype string, size string) string {
	t.Helper()
	mnt := filepath.Join(t.TempDir(), fstype)
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if fstype == "tmpfs" {
		if err := unix.Mount("tmpfs", mnt, "tmpfs", 0, "size="+size); err != nil {
			t.Fatal(err)
		}
	} else {
		if _, err := exec.LookPath("mkfs.xfs"); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatal("mkfs.xfs missing (xfsprogs; make test installs it)")
			}
			t.Skip("mkfs.xfs missing")
		}
		img := filepath.Join(t.TempDir(), "xfs.img")
		if err := os.WriteFile(img, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(img, 512<<20); err != nil {
			t.Fatal(err)
		}
		for _, c := range [][]string{{"mkfs.xfs", "-q", "-m", "reflink=1", img}, {"mount", "-o", "loop", img, mnt}} {
			if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
				t.Fatalf("%v: %v\n%s", c, err, out)
			}
		}
	}
	t.Cleanup(func() { unix.Unmount(mnt, unix.MNT_DETACH) })
	return mnt
}

// TestAdoptReflinks: with moss's installation and the state root on one
// XFS, contents enter the store by reflink (the file system confirms the
// extents are shared) and are reported as reflinked, not copied.
func TestAdoptReflinks(t *testing.T) {
	testenv.RequireMountNS(t)
	mnt := scratchFS(t, "xfs", "")
	inst := bigInstall(t)
	root := filepath.Join(mnt, "moss")
	inst.write(t, root)
	s, err := state.Create(filepath.Join(root, ".moss", "mossfs"))
	if err != nil {
		t.Fatal(err)
	}
	res, err := adoptOne(t, s, root, 1)
	if err != nil {
		t.Fatal(err)
	}
	tr := res.Transfer
	t.Logf("transfer: %+v", tr)
	if tr.ReflinkedFiles < 4 || tr.ReflinkedBytes < 12<<20 || tr.CopiedBytes > 4096 {
		t.Fatalf("transfer %+v: want the 4 large contents reflinked, nothing large copied", tr)
	}
	unix.Sync()
	big := inst.pkgs[1].rows[0].data
	obj := s.Store().ObjectPath(fsverity.Sum(big))
	out, err := exec.Command("filefrag", "-v", obj).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "shared") {
		t.Fatalf("object %s: extents not shared with moss's asset (%v):\n%s", obj, err, out)
	}
}

// TestAdoptNoSpace: a store on a small file system that cannot reflink
// from moss's assets is refused before anything is copied, with the
// sizes in the error, and nothing is published.
func TestAdoptNoSpace(t *testing.T) {
	testenv.RequireMountNS(t)
	mnt := scratchFS(t, "tmpfs", "8m")
	inst := bigInstall(t)
	root := t.TempDir()
	inst.write(t, root)
	s, err := state.Create(filepath.Join(mnt, "state"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = adoptOne(t, s, root, 1)
	if !errors.Is(err, ErrNoSpace) {
		t.Fatalf("adopt into 8 MiB: %v, want ErrNoSpace", err)
	}
	t.Log(err)
	ents, _ := os.ReadDir(s.Store().ObjectsDir())
	if len(ents) != 0 {
		t.Fatalf("%d entries written to the store's objects", len(ents))
	}
	if ids, _ := s.IDs(); len(ids) != 0 {
		t.Fatalf("published %v", ids)
	}
}
