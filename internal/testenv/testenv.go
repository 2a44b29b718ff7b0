// Package testenv holds what tests across mossfs share: where shared/ test data
// lives, running a test binary inside a private mount namespace, and running
// as another user.
package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// SharedDir returns the shared/ directory that sits beside the repository
// root: $MOSSFS_SHARED if set, else ../shared relative to the directory that
// holds go.mod. A missing shared/ fails the test (it is never skipped: CI has it).
func SharedDir(t testing.TB) string {
	t.Helper()
	dir, err := sharedDir()
	if err != nil {
		t.Fatalf("shared test data: %v", err)
	}
	return dir
}

// SharedPath returns a path inside shared/, e.g. SharedPath(t, "testdata", "composefs").
func SharedPath(t testing.TB, elem ...string) string {
	t.Helper()
	return filepath.Join(append([]string{SharedDir(t)}, elem...)...)
}

func sharedDir() (string, error) {
	if d := os.Getenv("MOSSFS_SHARED"); d != "" {
		if st, err := os.Stat(d); err != nil || !st.IsDir() {
			return "", fmt.Errorf("$MOSSFS_SHARED=%s is not a directory", d)
		}
		return d, nil
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := wd; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			s := filepath.Join(filepath.Dir(d), "shared")
			if st, err := os.Stat(s); err != nil || !st.IsDir() {
				return "", fmt.Errorf("%s not found beside the repository root %s (set $MOSSFS_SHARED)", s, d)
			}
			return s, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("no go.mod above %s", wd)
		}
	}
}

const nsEnv = "MOSSFS_TEST_IN_MOUNTNS"

// InPrivateMountNS reports whether this process is the re-executed child
// running in its own mount namespace.
func InPrivateMountNS() bool { return os.Getenv(nsEnv) == "1" }

// Runner is what MainInMountNS runs: a *testing.M, or one wrapped to
// clean up after its tests (m.Run returns before the process exits).
type Runner interface{ Run() int }

// ThenRemove runs m's tests, then removes the directory *dir names (if
// any): what a package's tests built once for all of them, in /tmp. A
// pointer, because the tests set it while they run.
func ThenRemove(m Runner, dir *string) Runner { return thenRemove{m, dir} }

type thenRemove struct {
	m   Runner
	dir *string
}

func (r thenRemove) Run() int {
	code := r.m.Run()
	if *r.dir != "" {
		os.RemoveAll(*r.dir)
	}
	return code
}

// Deps returns the import paths of everything the package pkg (a path as
// the go command takes it) links, as go list -deps prints them.
func Deps(t testing.TB, pkg string) []string {
	t.Helper()
	gobin := filepath.Join(runtime.GOROOT(), "bin", "go")
	out, err := exec.Command(gobin, "list", "-deps", pkg).CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps %s: %v\n%s", pkg, err, out)
	}
	return strings.Fields(string(out))
}

// MainInMountNS is called from TestMain of packages whose tests mount things.
// As root it re-executes the test binary in a new mount namespace whose
// mounts are all private (Go remounts / MS_REC|MS_PRIVATE after CLONE_NEWNS),
// so a failing test can neither touch the host's mounts nor leave any behind:
// the namespace and everything mounted in it die with the child. Not as root,
// or when unsharing is not permitted, the tests run directly and mount tests
// skip themselves through RequireRoot.
func MainInMountNS(m Runner) {
	if InPrivateMountNS() || os.Geteuid() != 0 {
		os.Exit(m.Run())
	}
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "testenv: cannot find test binary:", err)
		os.Exit(2)
	}
	cmd := exec.Command(exe, os.Args[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), nsEnv+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Run(); err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			os.Exit(ee.ExitCode())
		}
		fmt.Fprintln(os.Stderr, "testenv: re-exec in a private mount namespace:", err)
		os.Exit(2)
	}
	os.Exit(0)
}

// RequireMountNS skips the test unless it runs as root inside the private
// mount namespace set up by MainInMountNS. In CI (CI=true, root) a skip is a
// failure: the mount tests must run there.
func RequireMountNS(t testing.TB) {
	t.Helper()
	if InPrivateMountNS() {
		return
	}
	reason := "needs root and a private mount namespace (TestMain must call testenv.MainInMountNS)"
	if os.Getenv("CI") == "true" && os.Geteuid() == 0 {
		t.Fatal(reason)
	}
	t.Skip(reason)
}

// Nobody returns the credential of the unprivileged user "nobody", for tests
// that check what another user can reach. Switching to it needs root: without
// root the test skips, and in CI (CI=true) that is a failure.
func Nobody(t testing.TB) *syscall.Credential {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("needs root, to run as the user nobody")
		}
		t.Skip("needs root, to run as the user nobody")
	}
	u, err := user.Lookup("nobody")
	if err != nil {
		t.Fatalf("no user nobody: %v", err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		t.Fatalf("user nobody: uid %q gid %q", u.Uid, u.Gid)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}
}

// WorldDir makes a directory under /tmp that every user may enter (0755),
// removed when the test ends. A t.TempDir is 0700 under a 0700 parent, so a
// test of what another user can reach inside it would prove nothing.
func WorldDir(t testing.TB, prefix string) string {
	t.Helper()
	dir, err := os.MkdirTemp("/tmp", prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}
