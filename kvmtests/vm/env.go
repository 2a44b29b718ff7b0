package vm

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// ErrUnavailable is wrapped by NewEnv when QEMU or the guest kernel cannot
// be obtained; tests skip on it, every other error is a failure.
var ErrUnavailable = errors.New("VM tests unavailable")

// Env is a ready harness: the kernel, the static guest binaries and a
// scratch directory.
type Env struct {
	Repo   string // repository root (holds go.mod)
	Work   string // scratch directory for initramfs, disks and logs
	Kernel *Kernel
	Bins   map[string]string // guest path /bin/<name> → host file
	KVM    bool
	// Libs are shared libraries of host tools, at the same paths in the guest.
	Libs map[string]bool
}

// RepoRoot returns the directory holding go.mod at or above the working directory.
func RepoRoot() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := wd; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("no go.mod above %s", wd)
		}
	}
}

// NewEnv finds QEMU and the kernel (cached under <repo>/kvmtests/.cache,
// override the metapackage with $MOSSFS_KVM_KERNEL_META) and prepares work.
func NewEnv(work string) (*Env, error) {
	if _, err := QEMUPath(); err != nil {
		return nil, fmt.Errorf("%w: qemu-system-x86_64 not found (apt-get install qemu-system-x86)", ErrUnavailable)
	}
	if _, err := os.Stat("/bin/busybox"); err != nil {
		return nil, fmt.Errorf("the guest's /init needs a static /bin/busybox on the host (apt-get install busybox-static): %w", err)
	}
	repo, err := RepoRoot()
	if err != nil {
		return nil, err
	}
	meta := os.Getenv("MOSSFS_KVM_KERNEL_META")
	if meta == "" {
		meta = DefaultMeta
	}
	k, err := FetchKernel(filepath.Join(repo, "kvmtests", ".cache"), meta, DefaultModules)
	if err != nil {
		return nil, fmt.Errorf("%w: kernel %s: %v", ErrUnavailable, meta, err)
	}
	if err := os.MkdirAll(work, 0o755); err != nil {
		return nil, err
	}
	return &Env{Repo: repo, Work: work, Kernel: k, Bins: map[string]string{}, Libs: map[string]bool{}, KVM: os.Getenv("MOSSFS_KVM") == "1"}, nil
}

func goCmd(dir string, args ...string) *exec.Cmd {
	cmd := exec.Command("go", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	return cmd
}

// Build compiles a static program (go build) for the guest as /bin/<name>.
func (e *Env) Build(name, pkg string) error {
	out := filepath.Join(e.Work, "bin", name)
	if o, err := goCmd(e.Repo, "build", "-trimpath", "-ldflags=-s -w", "-o", out, pkg).CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %v\n%s", pkg, err, o)
	}
	e.Bins[name] = out
	return nil
}

// BuildTest compiles a test binary (go test -c) for the guest as /bin/<name>.
func (e *Env) BuildTest(name, pkg string) error {
	out := filepath.Join(e.Work, "bin", name)
	if o, err := goCmd(e.Repo, "test", "-c", "-trimpath", "-ldflags=-s -w", "-o", out, pkg).CombinedOutput(); err != nil {
		return fmt.Errorf("go test -c %s: %v\n%s", pkg, err, o)
	}
	e.Bins[name] = out
	return nil
}

// AddHostTool puts a dynamically linked host program into the guest's
// /bin together with the shared libraries ldd lists for it (at their host
// paths), so that tests using it as an oracle (mkfs.erofs, fsverity) run
// in the VM too. A missing tool is an error.
func (e *Env) AddHostTool(name string) error {
	p, err := exec.LookPath(name)
	if err != nil {
		return fmt.Errorf("host tool %s: %w", name, err)
	}
	out, err := exec.Command("ldd", p).Output()
	if err != nil {
		// Not dynamic (or no ldd): the binary alone.
		e.Bins[name] = p
		return nil
	}
	for _, l := range strings.Split(string(out), "\n") {
		f := strings.Fields(l)
		switch {
		case len(f) >= 3 && f[1] == "=>" && strings.HasPrefix(f[2], "/"):
			e.Libs[f[2]] = true
		case len(f) >= 1 && strings.HasPrefix(f[0], "/"):
			e.Libs[f[0]] = true // the dynamic loader
		}
	}
	e.Bins[name] = p
	return nil
}

// initPrelude brings the guest up: busybox applets, pseudo filesystems,
// tmpfs on /tmp and /mnt (work beneath /mnt: MOVE_MOUNT_BENEATH refuses
// targets whose parent is the rootfs), modules, the virtio disks, and fd 3
// on the results port.
const initPrelude = `#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin TMPDIR=/tmp HOME=/tmp
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /mnt
for m in $(cat /lib/modules/load-order); do insmod /lib/modules/$m.ko || echo "kvmtest: insmod $m failed"; done
n=0; while [ ! -b /dev/vda ] && [ $n -lt 100 ]; do sleep 0.05; n=$((n+1)); done
exec 3>/dev/ttyS1
echo ` + BeginMarker + ` >&3
echo "uptime $(cut -d' ' -f1 /proc/uptime)" >&3
rc=0
. /kvmtest-body.sh
echo "` + EndMarker + ` rc=$rc uptime $(cut -d' ' -f1 /proc/uptime)" >&3
sync
/bin/kvmexit $rc
echo "kvmtest: isa-debug-exit failed, powering off"
poweroff -f
`

// Boot describes one guest run.
type Boot struct {
	Name   string            // names the work subdirectory
	Body   string            // shell run by /init after the prelude; sets $rc, writes results to fd 3
	Files  map[string][]byte // extra initramfs files (path → content, mode 0644)
	Disks  []string          // raw disk images, /dev/vda first
	Append string            // extra kernel command line
	// Timeout per boot (default DefaultTimeout).
	Timeout time.Duration
	Watch   func(results string) bool
}

// Run packs the initramfs for b and boots it.
func (e *Env) Run(ctx context.Context, b Boot) (*Result, error) {
	dir := filepath.Join(e.Work, b.Name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	ir := NewInitramfs()
	ir.FileFrom("bin/busybox", 0o755, "/bin/busybox")
	for name, p := range e.Bins {
		ir.FileFrom("bin/"+name, 0o755, p)
	}
	for lib := range e.Libs {
		ir.FileFrom(lib, 0o755, lib)
	}
	for _, m := range e.Kernel.Modules {
		ir.FileFrom("lib/modules/"+m+".ko", 0o644, filepath.Join(e.Kernel.ModuleDir, m+".ko"))
	}
	ir.File("lib/modules/load-order", 0o644, []byte(strings.Join(e.Kernel.Modules, "\n")+"\n"))
	ir.File("init", 0o755, []byte(initPrelude))
	ir.File("kvmtest-body.sh", 0o644, []byte(b.Body+"\n"))
	for p, data := range b.Files {
		ir.File(p, 0o644, data)
	}
	initrd := filepath.Join(dir, "initrd.gz")
	if err := ir.WriteFile(initrd); err != nil {
		return nil, fmt.Errorf("initramfs: %w", err)
	}
	m := &Machine{Kernel: e.Kernel, Initrd: initrd, Disks: b.Disks, Append: b.Append,
		Timeout: b.Timeout, Dir: dir, KVM: e.KVM, Watch: b.Watch}
	res, err := m.Run(ctx)
	if err == nil && !res.Killed && !strings.Contains(res.Results, BeginMarker) {
		// The guest died before /init ran (an emulation hiccup under TCG,
		// not something under test: nothing of ours has run). Once more.
		first := res
		if res, err = m.Run(ctx); err == nil {
			res.Console = "--- first attempt died before /init (retried) ---\n" + tail(first.Console, 30) + "\n--- retry ---\n" + res.Console
			res.Retried = true
		}
	}
	return res, err
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
