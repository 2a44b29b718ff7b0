package fusefs

import (
	"bytes"
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/mossfs/mossfs/internal/gentree"
	"github.com/mossfs/mossfs/internal/testenv"
	"github.com/mossfs/mossfs/overlay/overlaytest"
	"github.com/mossfs/mossfs/tree"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) { testenv.MainInMountNS(m) }

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func testLogger(t testing.TB) *log.Logger { return log.New(testWriter{t}, "fusefs: ", 0) }

// mountOpts mounts with opts at a new directory and unmounts at cleanup.
func mountOpts(t testing.TB, opts Options) *Server {
	t.Helper()
	if opts.Target == "" {
		opts.Target = t.TempDir()
	}
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	s, err := Mount(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Unmount(); err != nil {
			t.Errorf("unmount: %v", err)
		}
		s.Wait()
	})
	return s
}

func sampleSource(t testing.TB, marker string) (*overlaytest.Tx, *TreeSource, string) {
	t.Helper()
	tx := overlaytest.Sample(marker)
	objects := t.TempDir()
	tx.WriteObjects(t, objects)
	src, err := NewTreeSource(tx.Root)
	if err != nil {
		t.Fatal(err)
	}
	return tx, src, objects
}

// modes are the two ways content is served: passthrough (root, Linux ≥ 6.9)
// and reads through the daemon without open requests.
var modes = []struct {
	name        string
	passthrough bool
}{{"passthrough", true}, {"daemon-reads", false}}

func TestTreeSourceMatchesSample(t *testing.T) {
	testenv.RequireMountNS(t)
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			tx, src, objects := sampleSource(t, "a")
			s := mountOpts(t, Options{Source: src, Objects: objects, Passthrough: m.passthrough})
			overlaytest.Compare(t, s.Target(), tx)
			t.Logf("passthrough: %v", s.Passthrough())
			if !m.passthrough && os.Geteuid() == 0 {
				// Reads through the daemon get a 1 MiB readahead.
				ra := fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", unix.Major(s.Dev()), unix.Minor(s.Dev()))
				if b, err := os.ReadFile(ra); err != nil || strings.TrimSpace(string(b)) != "1024" {
					t.Errorf("%s: %q %v, want 1024", ra, b, err)
				}
			}
		})
	}
}

func TestCorruptObjectGivesEIO(t *testing.T) {
	testenv.RequireMountNS(t)
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) { testCorruptObject(t, m.passthrough) })
	}
}

func testCorruptObject(t *testing.T, passthrough bool) {
	tx, src, objects := sampleSource(t, "a")
	tool := tx.Root.Lookup("bin/tool")
	obj := filepath.Join(objects, tool.Payload)
	b, err := os.ReadFile(obj)
	if err != nil {
		t.Fatal(err)
	}
	b[100] ^= 1
	if err := os.WriteFile(obj, b, 0o644); err != nil {
		t.Fatal(err)
	}
	s := mountOpts(t, Options{Source: src, Objects: objects, Passthrough: passthrough})
	for _, p := range []string{"bin/tool", "etc/tool-hard"} {
		_, err := os.ReadFile(filepath.Join(s.Target(), p))
		if !errors.Is(err, syscall.EIO) {
			t.Errorf("%s: read of a corrupted object: %v, want EIO", p, err)
		}
	}
	// Other objects are served.
	if _, err := os.ReadFile(filepath.Join(s.Target(), "bin/suid")); err != nil {
		t.Errorf("bin/suid: %v", err)
	}
	// Repairing the object serves it again: failures are not cached.
	b[100] ^= 1
	if err := os.WriteFile(obj, b, 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(s.Target(), "bin/tool"))
	if err != nil || !bytes.Equal(got, b) {
		t.Errorf("bin/tool after repair: %v", err)
	}

	// With checks off the corrupted content is served (the check is what
	// made the difference above).
	b[100] ^= 1
	if err := os.WriteFile(obj, b, 0o644); err != nil {
		t.Fatal(err)
	}
	s2 := mountOpts(t, Options{Source: src, Objects: objects, NoVerify: true, Passthrough: passthrough})
	if _, err := os.ReadFile(filepath.Join(s2.Target(), "bin/tool")); err != nil {
		t.Errorf("NoVerify: %v", err)
	}
}

// A missing object is ENOENT on open, as on the kernel overlay.
func TestMissingObjectGivesENOENT(t *testing.T) {
	testenv.RequireMountNS(t)
	tx, src, objects := sampleSource(t, "a")
	if err := os.Remove(filepath.Join(objects, tx.Root.Lookup("bin/tool").Payload)); err != nil {
		t.Fatal(err)
	}
	s := mountOpts(t, Options{Source: src, Objects: objects})
	if _, err := os.ReadFile(filepath.Join(s.Target(), "bin/tool")); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("missing object: %v, want ENOENT", err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(s.Target(), "bin/tool"), &st); err != nil {
		t.Errorf("lstat of a file with a missing object: %v", err)
	}
}

func TestStatfs(t *testing.T) {
	testenv.RequireMountNS(t)
	_, src, objects := sampleSource(t, "a")
	s := mountOpts(t, Options{Source: src, Objects: objects})
	var st unix.Statfs_t
	if err := unix.Statfs(s.Target(), &st); err != nil {
		t.Fatal(err)
	}
	if st.Bsize != 4096 || st.Namelen != 255 || st.Flags&unix.ST_RDONLY == 0 {
		t.Errorf("statfs: bsize %d namelen %d flags %#x", st.Bsize, st.Namelen, st.Flags)
	}
	if err := os.WriteFile(filepath.Join(s.Target(), "new"), nil, 0o644); !errors.Is(err, syscall.EROFS) {
		t.Errorf("create: %v, want EROFS", err)
	}
}

func TestSwitchInPlace(t *testing.T) {
	testenv.RequireMountNS(t)
	txA, srcA, objects := sampleSource(t, "a")
	txB := overlaytest.Sample("b")
	txB.WriteObjects(t, objects)
	// Give b a root entry a lacks and drop one a has.
	extra := &tree.Node{Name: "only-b", Mode: tree.TypeReg | 0o644, Nlink: 1, Content: []byte("b\n"), Size: 2}
	txB.Root.AddChild(extra)
	txB.Root.Children = deleteChild(txB.Root.Children, "tmp")
	txB.Root.Sort()
	srcB, err := NewTreeSource(txB.Root)
	if err != nil {
		t.Fatal(err)
	}
	s := mountOpts(t, Options{Source: srcA, Objects: objects})
	mnt := s.Target()
	overlaytest.Compare(t, mnt, txA)

	// Hold a file and a directory of the old tree.
	held, err := os.Open(filepath.Join(mnt, "usr/share/doc/pkg/big"))
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	heldDir, err := os.Open(filepath.Join(mnt, "etc"))
	if err != nil {
		t.Fatal(err)
	}
	defer heldDir.Close()
	if _, err := os.Stat(filepath.Join(mnt, "only-b")); !os.IsNotExist(err) {
		t.Fatalf("only-b before the switch: %v", err)
	}

	if err := s.SwitchSource(srcB, objects); err != nil {
		t.Fatal(err)
	}
	overlaytest.Compare(t, mnt, txB)

	// The held file still reads the old transaction's content; the held
	// directory still resolves names in the old tree.
	got := make([]byte, 40)
	if _, err := held.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(got, []byte("tx=a ")) {
		t.Errorf("held file after the switch reads %q, want the old content", got)
	}
	conf, err := os.ReadFile(filepath.Join("/proc/self/fd", strconv.Itoa(int(heldDir.Fd())), "conf"))
	if err != nil || !bytes.Contains(conf, []byte("tx=a ")) {
		t.Errorf("held directory after the switch: %q %v, want the old content", conf, err)
	}
}

func deleteChild(cs []*tree.Node, name string) []*tree.Node {
	out := cs[:0]
	for _, c := range cs {
		if c.Name != name {
			out = append(out, c)
		}
	}
	return out
}

// TestTruncatedImage: the image is memory-mapped; truncating it under a
// running mount makes reads of the lost part fault. Those requests must
// answer EIO and the server must keep serving.
func TestTruncatedImage(t *testing.T) {
	testenv.RequireMountNS(t)
	img, objects := gentreeImage(t, gentree.Small)
	s := mountOpts(t, Options{Image: img, Objects: objects})
	if err := os.Truncate(img, 4096); err != nil {
		t.Fatal(err)
	}
	failed := 0
	for _, e := range gentree.List(gentree.Small) {
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(s.Target(), e.Path), &st); err != nil {
			if !errors.Is(err, syscall.EIO) {
				t.Fatalf("%s: %v, want EIO", e.Path, err)
			}
			failed++
		}
	}
	if failed == 0 {
		t.Fatal("every lookup succeeded on a truncated image")
	}
	var st unix.Statfs_t
	if err := unix.Statfs(s.Target(), &st); err != nil {
		t.Fatalf("the server stopped answering: %v", err)
	}
	t.Logf("%d lookups failed with EIO", failed)
}
