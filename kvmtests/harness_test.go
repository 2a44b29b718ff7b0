package kvmtests

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/mossfs/mossfs/kvmtests/vm"
)

var (
	envOnce sync.Once
	envVal  *vm.Env
	envErr  error
	workDir string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if workDir != "" && os.Getenv("MOSSFS_KVM_KEEP") == "" {
		os.RemoveAll(workDir)
	}
	os.Exit(code)
}

// harness returns the shared environment: kernel, QEMU and the guest
// binaries (built once per test process). It skips when QEMU or the kernel
// cannot be obtained and fails on anything else.
func harness(t *testing.T) *vm.Env {
	t.Helper()
	envOnce.Do(func() {
		workDir, envErr = os.MkdirTemp("", "mossfs-kvm-")
		if envErr != nil {
			return
		}
		envVal, envErr = vm.NewEnv(workDir)
		if envErr != nil {
			return
		}
		for _, b := range []struct{ name, pkg string }{
			{"kvmexit", "./kvmtests/cmd/kvmexit"},
			{"mossfs", "./cmd/mossfs"},
			{"moss-compose", "./cmd/moss-compose"},
		} {
			if envErr = envVal.Build(b.name, b.pkg); envErr != nil {
				return
			}
		}
		if envErr = envVal.BuildTest("guest.test", "./kvmtests/guest"); envErr != nil {
			return
		}
		for _, tool := range []string{"mkfs.erofs", "fsverity"} {
			if envErr = envVal.AddHostTool(tool); envErr != nil {
				return
			}
		}
		for _, p := range packagesInVM {
			if envErr = envVal.BuildTest(p.pkg+".test", "./"+p.pkg); envErr != nil {
				return
			}
		}
	})
	if errors.Is(envErr, vm.ErrUnavailable) {
		t.Skip(envErr)
	}
	if envErr != nil {
		t.Fatal(envErr)
	}
	t.Logf("kernel %s (%s), work %s", envVal.Kernel.Package, envVal.Kernel.Release, workDir)
	return envVal
}

// guestTests is the init body that runs the guest test binary on the disk
// mounted at /mnt/disk; extra are more go test flags.
func guestTests(extra string) string {
	return `mkdir -p /mnt/disk && mount -t ext4 /dev/vda /mnt/disk || rc=1
MOSSFS_KVM_GUEST=1 MOSSFS_KVM_DISK=/mnt/disk MOSSFS_KVM_DEV=/dev/vda /bin/guest.test -test.v -test.timeout 240s ` + extra + ` >&3 2>&3 || rc=1
umount /mnt/disk || rc=1`
}

// report turns the guest's results into subtests and fails with the logs
// when the guest did not report a complete pass.
func report(t *testing.T, res *vm.Result) {
	t.Helper()
	t.Logf("boot: %.1fs wall, QEMU exit %d", res.Duration.Seconds(), res.ExitCode)
	if res.Retried {
		t.Logf("the first attempt died before /init and was retried:\n%s", tail(res.Console, 40))
	}
	for _, r := range vm.ParseResults(res.Results) {
		t.Run(r.Name, func(t *testing.T) {
			t.Log("\n" + r.Output)
			switch r.Status {
			case "FAIL":
				t.Fail()
			case "SKIP":
				t.Skip()
			}
		})
	}
	if !res.Passed() {
		t.Errorf("guest did not report a complete pass (exit %d, timed out %v, end marker %v)\n--- console (tail) ---\n%s\n--- results ---\n%s",
			res.ExitCode, res.TimedOut, strings.Contains(res.Results, vm.EndMarker), tail(res.Console, 60), res.Results)
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// fsverityDigest is the independent oracle: the fsverity CLI's digest of p.
func fsverityDigest(t *testing.T, p string) string {
	t.Helper()
	out := run(t, "fsverity", "digest", "--hash-alg=sha256", "--block-size=4096", "--compact", p)
	return strings.TrimSpace(out)
}

func writeFile(t *testing.T, p string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// pattern returns n deterministic bytes.
func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	x := uint32(seed) + 1
	for i := range b {
		x = x*1664525 + 1013904223
		b[i] = byte(x >> 24)
	}
	return b
}

func boot(t *testing.T, env *vm.Env, b vm.Boot) *vm.Result {
	t.Helper()
	res, err := env.Run(context.Background(), b)
	if err != nil {
		t.Fatalf("boot %s: %v", b.Name, err)
	}
	return res
}
