// Package trigtest tests transaction triggers end to end: real handlers
// (depmod, glib-compile-schemas, update-mime-database from the host's own
// packages) in real containers over real overlay mounts of composed images.
package trigtest

import (
	"bytes"
	"context"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mossfs/mossfs/internal/sandbox"
	"github.com/mossfs/mossfs/internal/state"
	"github.com/mossfs/mossfs/internal/stone"
	"github.com/mossfs/mossfs/internal/testenv"
	"github.com/mossfs/mossfs/overlay"
	"github.com/mossfs/mossfs/tree"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) {
	sandbox.Init() // the containers' init is this test binary
	// Then the host /usr the tests built goes (each run left a
	// mossfs-trig-usr-* in /tmp).
	testenv.MainInMountNS(testenv.ThenRemove(m, &fixtureDir))
}

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("transaction triggers run in containers as root")
	}
}

// hostPackages are the Debian packages whose files make the test /usr.
var hostPackages = []string{"kmod", "libglib2.0-bin", "shared-mime-info"}

var (
	fixtureOnce sync.Once
	fixtureDir  string
	fixtureErr  error
)

// hostUsr returns a directory holding a small real /usr: the files of
// hostPackages (dpkg -L) and of coreutils' sleep, plus their shared-library
// closure (ldd), as the host has them, and the probe program.
func hostUsr(t testing.TB) string {
	t.Helper()
	fixtureOnce.Do(func() {
		fixtureDir, fixtureErr = buildHostUsr()
	})
	if fixtureErr != nil {
		t.Fatal(fixtureErr)
	}
	return filepath.Join(fixtureDir, "usr")
}

func buildHostUsr() (string, error) {
	dir, err := os.MkdirTemp("", "mossfs-trig-usr-")
	if err != nil {
		return "", err
	}
	usr := filepath.Join(dir, "usr")
	c := &copier{usr: usr, done: map[string]bool{}}
	for _, pkg := range hostPackages {
		out, err := exec.Command("dpkg", "-L", pkg).Output()
		if err != nil {
			return "", errorf("dpkg -L %s (is it installed? scripts/install-deps.sh installs it): %v", pkg, err)
		}
		for _, p := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			if strings.Contains(p, "/share/man/") || strings.Contains(p, "/share/doc/") || strings.Contains(p, "/locale/") {
				continue
			}
			if err := c.copy(p, false); err != nil {
				return "", err
			}
		}
	}
	if err := c.copy("/usr/bin/sleep", true); err != nil {
		return "", err
	}
	probe, err := buildProbe(dir)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Join(usr, "libexec"), 0o755); err != nil {
		return "", err
	}
	if err := os.Rename(probe, filepath.Join(usr, "libexec", "probe")); err != nil {
		return "", err
	}
	for _, f := range c.elfs {
		if err := c.lddClosure(f); err != nil {
			return "", err
		}
	}
	return dir, nil
}

func errorf(format string, a ...any) error { return fmt.Errorf("test /usr: "+format, a...) }

// buildProbe compiles testdata/probe statically.
func buildProbe(dir string) (string, error) {
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(goBin); err != nil {
		goBin = "go"
	}
	out := filepath.Join(dir, "probe")
	cmd := exec.Command(goBin, "build", "-o", out, "./testdata/probe")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", errorf("building the probe: %v: %s", err, b)
	}
	return out, nil
}

type copier struct {
	usr  string
	done map[string]bool
	elfs []string // host paths of ELF files copied
}

// usrPath maps a host path to its place under usr ("" if outside /usr and
// the merged-usr links /bin, /sbin, /lib*).
func usrPath(p string) string {
	p = filepath.Clean(p)
	if rel, ok := strings.CutPrefix(p, "/usr/"); ok {
		return rel
	}
	first, rest, _ := strings.Cut(strings.TrimPrefix(p, "/"), "/")
	switch first {
	case "bin", "sbin", "lib", "lib64", "lib32":
		if rest == "" {
			return ""
		}
		return first + "/" + rest
	}
	return ""
}

// copy copies one host path (file, symlink and what it points to, or
// directory without contents) into usr.
func (c *copier) copy(p string, follow bool) error {
	rel := usrPath(p)
	if rel == "" || c.done[rel] {
		return nil
	}
	c.done[rel] = true
	st, err := os.Lstat(p)
	if err != nil {
		return errorf("%v", err)
	}
	dst := filepath.Join(c.usr, rel)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	switch {
	case st.IsDir():
		return os.MkdirAll(dst, 0o755)
	case st.Mode()&os.ModeSymlink != 0:
		target, err := os.Readlink(p)
		if err != nil {
			return err
		}
		if err := os.Symlink(target, dst); err != nil {
			return err
		}
		if !filepath.IsAbs(target) {
			target = filepath.Join(filepath.Dir(p), target)
		}
		return c.copy(target, true)
	case st.Mode().IsRegular():
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if err := os.WriteFile(dst, data, st.Mode().Perm()); err != nil {
			return err
		}
		if bytes.HasPrefix(data, []byte("\x7fELF")) {
			c.elfs = append(c.elfs, p)
		}
	}
	return nil
}

var lddLine = regexp.MustCompile(`(?:=>\s*)?(/\S+)\s+\(0x`)

// lddClosure copies the shared libraries (and interpreter) of an ELF file.
func (c *copier) lddClosure(p string) error {
	f, err := elf.Open(p)
	if err != nil {
		return nil // not an ELF object after all
	}
	dyn := false
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_DYNAMIC {
			dyn = true
		}
	}
	f.Close()
	if !dyn {
		return nil
	}
	out, err := exec.Command("ldd", p).Output()
	if err != nil {
		return nil // ldd refuses some objects (not dynamic); nothing to copy
	}
	for _, m := range lddLine.FindAllStringSubmatch(string(out), -1) {
		before := len(c.elfs)
		if err := c.copy(m[1], true); err != nil {
			return err
		}
		for _, e := range c.elfs[before:] {
			if err := c.lddClosure(e); err != nil {
				return err
			}
		}
	}
	return nil
}

// tmpDir is a temporary directory removed after the test, mounts or not.
func tmpDir(t testing.TB) string {
	t.Helper()
	d, err := os.MkdirTemp("", "mossfs-trig-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// writeTree writes files (path → content) under a new directory.
func writeTree(t testing.TB, files map[string]string) string {
	t.Helper()
	d := tmpDir(t)
	for p, content := range files {
		full := filepath.Join(d, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

func newState(t testing.TB) *state.State {
	t.Helper()
	s, err := state.Create(filepath.Join(tmpDir(t), "state"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func importTree(t testing.TB, s *state.State, dir string) state.Fragment {
	t.Helper()
	im, err := s.NewImporter(stone.Format{})
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	f, err := im.Tree(context.Background(), dir, "/")
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// epoch is the transactions' time in these tests.
var epoch = time.Unix(1700000000, 0)

// fileOf reads a regular file of a tree (inline or from the store).
func fileOf(t testing.TB, s *state.State, root *tree.Node, p string) []byte {
	t.Helper()
	n := find(root, p)
	if n == nil {
		t.Fatalf("%s not in the image", p)
	}
	in := n.Inode()
	if in.Mode&tree.TypeMask != tree.TypeReg {
		t.Fatalf("%s is not a regular file (mode %o)", p, in.Mode)
	}
	if in.Payload == "" {
		return in.Content
	}
	data, err := os.ReadFile(filepath.Join(s.Store().ObjectsDir(), in.Payload))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func find(root *tree.Node, p string) *tree.Node {
	n := root
	for _, name := range strings.Split(strings.Trim(p, "/"), "/") {
		if name == "" {
			continue
		}
		n = n.Child(name)
		if n == nil {
			return nil
		}
	}
	return n
}

// mountTx mounts a transaction read-only (the kernel's overlay of its image
// and the store) and returns the mount point.
func mountTx(t testing.TB, s *state.State, tx *state.Transaction) string {
	t.Helper()
	fd, _, err := overlay.Mount(overlay.Options{Image: s.ImagePath(tx), ObjectsDir: s.Store().ObjectsDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	mnt := tmpDir(t)
	if err := unix.MoveMount(fd, "", unix.AT_FDCWD, mnt, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(mnt, unix.MNT_DETACH) })
	return mnt
}
