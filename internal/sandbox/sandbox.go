// Package sandbox runs one command in a fresh container whose /usr is a
// writable overlay of a transaction: the transaction's EROFS image with the
// content store as data-only layer, optional extra lower layers above it,
// and an upper directory that receives every change the command makes.
// It is how compose runs transaction triggers (moss's crates/container).
//
// The container is a re-executed copy of the calling program (see Init),
// started with CLONE_NEWNS|NEWPID|NEWIPC|NEWUTS|NEWNET, as root, with only
// the loopback interface. Its root is a fresh tmpfs holding:
//
//	/usr                  the overlay, read-write
//	/bin /sbin /lib /lib64 /lib32   symlinks into usr/ (as moss's isolation root)
//	/etc                  the host's /etc, bind-mounted read-only (not recursive)
//	/proc                 a new proc for the new pid namespace
//	/tmp /var /run        empty tmpfs
//	/dev /sys             the host's, recursively bound, slave propagation
//
// The command runs with cwd /, stdin /dev/null, umask 022 and exactly the
// environment it is given; it is not run through a shell. Init is pid 1 of
// the namespace: when it dies (timeout, or the caller dies: it gets SIGKILL
// as parent-death signal) every process in the container dies with it, and
// its mounts vanish with the namespace. Nothing is mounted in the caller's
// mount namespace.
package sandbox

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

const initEnv = "MOSSFS_SANDBOX_INIT"

// Spec describes one container run.
type Spec struct {
	// Image is the transaction's composefs EROFS image; Objects the store's
	// objects directory (the data-only lower layer).
	Image, Objects string
	// Lowers are extra lower layers above the image, topmost first.
	Lowers []string
	// Upper and Work are the overlay's upper and work directories (same
	// file system, empty work).
	Upper, Work string
	// Scratch is an empty directory the container uses for its mount points.
	Scratch string
	// Run and Args are the command; Run without a "/" is looked up in the
	// container's PATH (from Env).
	Run  string
	Args []string
	// Env is the command's entire environment.
	Env []string
	// Timeout kills the container after this long (0: no limit).
	Timeout time.Duration
	// Exe is the program re-executed as the container's init (default: this
	// one, os.Executable). It must call Init first thing in main.
	Exe string
}

// Outcome says how a run ended.
type Outcome string

const (
	Exited   Outcome = "exited"    // the command ran and exited (Code)
	Signaled Outcome = "signaled"  // the command was killed by a signal (Signal)
	NoStart  Outcome = "not-found" // the command could not be started
	TimedOut Outcome = "timeout"   // the container was killed at the timeout
)

// Result is what a run did.
type Result struct {
	Outcome Outcome
	Code    int
	Signal  string
	// Output is the command's stdout and stderr, interleaved (at most 1 MiB).
	Output []byte
	// Err explains NoStart.
	Err string
}

// config is what the init reads from its environment.
type config struct {
	Spec
	Status int `json:"status_fd"`
}

// Init must be called at the very start of main (and TestMain) of every
// program that runs containers: in the re-executed container init it sets
// up the container, runs the command and exits; elsewhere it returns.
func Init() {
	data := os.Getenv(initEnv)
	if data == "" {
		return
	}
	os.Unsetenv(initEnv)
	var c config
	if err := json.Unmarshal([]byte(data), &c); err != nil {
		fmt.Fprintln(os.Stderr, "sandbox init:", err)
		os.Exit(125)
	}
	status := os.NewFile(uintptr(c.Status), "status")
	unix.CloseOnExec(c.Status)
	report := func(s string) { _, _ = status.WriteString(s) }
	if err := setup(&c.Spec); err != nil {
		report("setup " + err.Error())
		os.Exit(125)
	}
	os.Setenv("PATH", envValue(c.Env, "PATH"))
	cmd := exec.Command(c.Run, c.Args...)
	cmd.Env = c.Env
	cmd.Dir = "/"
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := cmd.Start(); err != nil {
		report("nostart " + err.Error())
		os.Exit(127)
	}
	err := cmd.Wait()
	var ee *exec.ExitError
	switch {
	case err == nil:
		report("exit 0")
	case errors.As(err, &ee):
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			report("signal " + ws.Signal().String())
		} else {
			report("exit " + strconv.Itoa(ee.ExitCode()))
		}
	default:
		report("nostart " + err.Error())
	}
	os.Exit(0)
}

func envValue(env []string, key string) string {
	for _, e := range env {
		if v, ok := strings.CutPrefix(e, key+"="); ok {
			return v
		}
	}
	return ""
}

// setup builds the container's root and pivots into it.
func setup(s *Spec) error {
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("making / private: %w", err)
	}
	newRoot := s.Scratch + "/root"
	imgDir := s.Scratch + "/image"
	for _, d := range []string{newRoot, imgDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	if err := unix.Mount("tmpfs", newRoot, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0755"); err != nil {
		return fmt.Errorf("root tmpfs: %w", err)
	}
	for _, d := range []string{"usr", "etc", "proc", "sys", "dev", "tmp", "var", "run", ".old"} {
		if err := os.Mkdir(newRoot+"/"+d, 0o755); err != nil {
			return err
		}
	}
	for _, l := range []string{"bin", "sbin", "lib", "lib64", "lib32"} {
		if err := os.Symlink("usr/"+l, newRoot+"/"+l); err != nil {
			return err
		}
	}
	if err := mountUsr(s, imgDir, newRoot+"/usr"); err != nil {
		return err
	}
	if err := unix.Mount("/etc", newRoot+"/etc", "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("binding /etc: %w", err)
	}
	if err := unix.Mount("", newRoot+"/etc", "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV, ""); err != nil {
		return fmt.Errorf("/etc read-only: %w", err)
	}
	for _, d := range []string{"sys", "dev"} {
		if err := unix.Mount("/"+d, newRoot+"/"+d, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("binding /%s: %w", d, err)
		}
		if err := unix.Mount("", newRoot+"/"+d, "", unix.MS_SLAVE|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("/%s slave: %w", d, err)
		}
	}
	for _, d := range []string{"tmp", "var", "run"} {
		mode := "mode=0755"
		if d == "tmp" {
			mode = "mode=1777"
		}
		if err := unix.Mount("tmpfs", newRoot+"/"+d, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, mode); err != nil {
			return fmt.Errorf("tmpfs /%s: %w", d, err)
		}
	}
	if err := unix.PivotRoot(newRoot, newRoot+"/.old"); err != nil {
		return fmt.Errorf("pivot_root: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return err
	}
	if err := unix.Unmount("/.old", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("detaching the old root: %w", err)
	}
	if err := os.Remove("/.old"); err != nil {
		return err
	}
	if err := unix.Mount("proc", "/proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("mounting /proc: %w", err)
	}
	// The root's tmpfs is not for writing: only /usr, /tmp, /var and /run are.
	if err := unix.Mount("", "/", "", unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV, ""); err != nil {
		return fmt.Errorf("root read-only: %w", err)
	}
	unix.Umask(0o022)
	if err := loopbackUp(); err != nil {
		return fmt.Errorf("bringing up lo: %w", err)
	}
	return nil
}

// mountUsr mounts the writable overlay of the transaction on target.
func mountUsr(s *Spec, imgDir, target string) error {
	efd, err := overlayMountImage(s.Image)
	if err != nil {
		return err
	}
	err = unix.MoveMount(efd, "", unix.AT_FDCWD, imgDir, unix.MOVE_MOUNT_F_EMPTY_PATH)
	unix.Close(efd)
	if err != nil {
		return fmt.Errorf("attaching the image: %w", err)
	}
	fsfd, err := unix.Fsopen("overlay", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return fmt.Errorf("fsopen overlay: %w", err)
	}
	defer unix.Close(fsfd)
	set := func(k, v string) error {
		if err := unix.FsconfigSetString(fsfd, k, v); err != nil {
			return fmt.Errorf("overlay %s=%s: %w%s", k, v, err, kernelLog(fsfd))
		}
		return nil
	}
	steps := [][2]string{{"source", "mossfs-trigger"}}
	for _, l := range s.Lowers {
		steps = append(steps, [2]string{"lowerdir+", l})
	}
	steps = append(steps, [2]string{"lowerdir+", imgDir}, [2]string{"datadir+", s.Objects},
		[2]string{"upperdir", s.Upper}, [2]string{"workdir", s.Work},
		[2]string{"metacopy", "on"}, [2]string{"redirect_dir", "on"})
	for _, st := range steps {
		if err := set(st[0], st[1]); err != nil {
			return err
		}
	}
	if err := unix.FsconfigCreate(fsfd); err != nil {
		return fmt.Errorf("creating the /usr overlay: %w%s", err, kernelLog(fsfd))
	}
	mfd, err := unix.Fsmount(fsfd, unix.FSMOUNT_CLOEXEC, unix.MOUNT_ATTR_NODEV)
	if err != nil {
		return fmt.Errorf("fsmount overlay: %w%s", err, kernelLog(fsfd))
	}
	defer unix.Close(mfd)
	if err := unix.MoveMount(mfd, "", unix.AT_FDCWD, target, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("attaching /usr: %w", err)
	}
	return nil
}

func kernelLog(fsfd int) string {
	var msgs []string
	buf := make([]byte, 4096)
	for range 16 {
		n, err := unix.Read(fsfd, buf)
		if err != nil || n <= 0 {
			break
		}
		msgs = append(msgs, strings.TrimSpace(string(buf[:n])))
	}
	if len(msgs) == 0 {
		return ""
	}
	return " (kernel: " + strings.Join(msgs, "; ") + ")"
}

func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return err
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	return unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
}

// limitedBuffer keeps the first max bytes written and drops the rest.
type limitedBuffer struct {
	buf bytes.Buffer
	max int
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if room := b.max - b.buf.Len(); room > 0 {
		b.buf.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

// Run runs the spec's command in a new container and waits for it. The
// error is for the container itself failing (it could not be set up); the
// command's own failures are in the Result.
func Run(ctx context.Context, s Spec) (*Result, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("sandbox: containers need root")
	}
	exe := s.Exe
	if exe == "" {
		var err error
		if exe, err = os.Executable(); err != nil {
			return nil, fmt.Errorf("sandbox: %w", err)
		}
	}
	sr, sw, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer sr.Close()
	data, err := json.Marshal(config{Spec: s, Status: 3})
	if err != nil {
		sw.Close()
		return nil, err
	}
	if s.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.Timeout)
		defer cancel()
	}
	out := &limitedBuffer{max: 1 << 20}
	cmd := exec.CommandContext(ctx, exe)
	cmd.Args = []string{"moss-trigger-init"}
	cmd.Env = []string{initEnv + "=" + string(data)}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.ExtraFiles = []*os.File{sw}
	cmd.WaitDelay = 5 * time.Second
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: unix.CLONE_NEWNS | unix.CLONE_NEWPID | unix.CLONE_NEWIPC | unix.CLONE_NEWUTS | unix.CLONE_NEWNET,
		Pdeathsig:  syscall.SIGKILL,
	}
	// The parent-death signal follows the thread that forked: keep that
	// thread alive (and ours) until the container is gone.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := cmd.Start(); err != nil {
		sw.Close()
		return nil, fmt.Errorf("sandbox: starting the container: %w", err)
	}
	sw.Close()
	statusC := make(chan []byte, 1)
	go func() { b, _ := io.ReadAll(sr); statusC <- b }()
	werr := cmd.Wait()
	status := string(<-statusC)
	res := &Result{Output: out.buf.Bytes()}
	if ctx.Err() != nil && !strings.HasPrefix(status, "exit") && !strings.HasPrefix(status, "signal") {
		res.Outcome = TimedOut
		return res, nil
	}
	kind, rest, _ := strings.Cut(status, " ")
	switch kind {
	case "exit":
		res.Outcome = Exited
		res.Code, _ = strconv.Atoi(rest)
	case "signal":
		res.Outcome, res.Signal = Signaled, rest
	case "nostart":
		res.Outcome, res.Err = NoStart, rest
	case "setup":
		return nil, fmt.Errorf("sandbox: setting up the container: %s", rest)
	default:
		return nil, fmt.Errorf("sandbox: the container's init failed (%v): %s", werr, bytes.TrimSpace(res.Output))
	}
	return res, nil
}
