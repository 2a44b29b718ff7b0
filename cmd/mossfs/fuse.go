package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log"
	"log/syslog"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"

	"github.com/mossfs/mossfs/internal/cli"
	"github.com/mossfs/mossfs/internal/fusefs"
	"github.com/spf13/cobra"
)

// mountFUSE serves the image at target through FUSE, content from objectsDir.
// Unless foreground, it returns once the mount is ready and the server keeps
// running in the background until unmount.
func mountFUSE(imagePath, objectsDir, target string, foreground bool) error {
	opts := fuseServeOpts{image: imagePath, objects: objectsDir, target: target, passthrough: fusePassthrough}
	if foreground {
		return opts.run(nil)
	}
	return opts.startDaemon()
}

// fusePassthrough is the --fuse-passthrough flag of mount, switch and
// rollback: FUSE mounts they start use passthrough reads (see
// internal/fusefs for when that pays).
var fusePassthrough bool

func addFUSEPassthroughFlag(cmd *cobra.Command) {
	cmd.Flags().BoolVar(&fusePassthrough, "fuse-passthrough", false,
		"with the FUSE driver, read file content through FUSE passthrough where the kernel allows it (root, Linux ≥ 6.9) instead of page-cached daemon reads")
}

// switchFUSE replaces the transaction served by the FUSE mount at target.
// As root a new daemon is mounted beneath the old mount, which is then
// unmounted (as for the overlay; the old daemon exits when its last user is
// gone). Where that is impossible, and always for a user who is not root,
// the running daemon swaps its tree in place (fusefs.RequestSwitch).
func switchFUSE(imagePath, objectsDir, target string) error {
	if os.Geteuid() == 0 {
		opts := fuseServeOpts{image: imagePath, objects: objectsDir, target: target, beneath: true, passthrough: fusePassthrough}
		err := opts.startDaemon()
		if err == nil {
			return nil
		}
		if _, err2 := fusefs.RequestSwitch(target, imagePath, objectsDir); err2 != nil {
			return fmt.Errorf("%w; switching inside the running daemon failed too: %v", err, err2)
		}
		return nil
	}
	_, err := fusefs.RequestSwitch(target, imagePath, objectsDir)
	return err
}

type fuseServeOpts struct {
	image, objects, target string
	beneath                bool
	noVerify               bool
	passthrough            bool
	debug                  bool
	readyFd                int
	logFile                string
}

func (o fuseServeOpts) args() []string {
	a := []string{"fuse-serve", "--image", o.image, "--objects", o.objects, "--target", o.target, "--ready-fd", "3"}
	if o.beneath {
		a = append(a, "--beneath")
	}
	if o.noVerify {
		a = append(a, "--no-verify")
	}
	if o.passthrough {
		a = append(a, "--passthrough")
	}
	if o.logFile != "" {
		a = append(a, "--log", o.logFile)
	}
	return a
}

// startDaemon re-executes mossfs as a detached "fuse-serve" daemon and waits
// for it to report over a pipe that the mount is ready (or why it failed).
func (o fuseServeOpts) startDaemon() error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("fuse mount: finding the mossfs binary: %w", err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("fuse mount: %w", err)
	}
	defer r.Close()
	cmd := exec.Command(exe, o.args()...)
	cmd.ExtraFiles = []*os.File{w}
	// Until it is ready the daemon reports on our stderr; then it lets go
	// of it, so that callers reading our output do not wait for it.
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	// Not boosted as a switch is: the daemon outlives it.
	if err := cli.StartUnboosted(cmd); err != nil {
		w.Close()
		return fmt.Errorf("fuse mount: starting the daemon: %w", err)
	}
	w.Close()
	line, rerr := bufio.NewReader(r).ReadString('\n')
	line = strings.TrimSpace(line)
	if strings.HasPrefix(line, "ready") {
		return cmd.Process.Release()
	}
	werr := cmd.Wait()
	if msg, ok := strings.CutPrefix(line, "error: "); ok {
		return errors.New(msg)
	}
	if rerr != nil && rerr != io.EOF {
		return fmt.Errorf("fuse mount: waiting for the daemon: %w", rerr)
	}
	return fmt.Errorf("fuse mount: the daemon exited before the mount was ready (%v)", werr)
}

// run mounts and serves until the file system is unmounted. ready, if not
// nil, receives "ready" or "error: …" once the outcome is known.
func (o fuseServeOpts) run(ready *os.File) error {
	logger := log.New(os.Stderr, "mossfs: ", 0)
	if os.Getenv("MOSSFS_FUSE_PASSTHROUGH") == "1" {
		// How mossfs mount, switch and rollback ask their daemon for FUSE
		// passthrough (see internal/fusefs for when it pays).
		o.passthrough = true
	}
	s, err := fusefs.Mount(fusefs.Options{
		Image: o.image, Objects: o.objects, Target: o.target,
		Beneath: o.beneath, NoVerify: o.noVerify, Passthrough: o.passthrough,
		Debug: o.debug, Logger: logger, Daemon: true,
	})
	if ready != nil {
		if err != nil {
			fmt.Fprintf(ready, "error: %v\n", err)
		} else {
			fmt.Fprintf(ready, "ready %d\n", os.Getpid())
		}
		ready.Close()
		if err == nil {
			detachOutput(logger, o.logFile)
		}
	}
	if err != nil {
		return err
	}
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer signal.Stop(sigs)
	stopping := false
	for {
		select {
		case <-s.Done():
			return nil
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				continue
			}
			if stopping {
				// Second signal: stop serving now; remaining users of a
				// lazily detached mount get ENOTCONN.
				logger.Printf("%v again: exiting", sig)
				return nil
			}
			stopping = true
			if err := s.Unmount(); err != nil {
				logger.Printf("%v: %v", sig, err)
			}
		}
	}
}

// detachOutput points stdin, stdout and stderr of the background daemon
// away from the terminal or pipes of whoever started it; messages go to
// logFile, else syslog, else nowhere.
func detachOutput(logger *log.Logger, logFile string) {
	null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		return
	}
	defer null.Close()
	_ = syscall.Dup2(int(null.Fd()), 0)
	_ = syscall.Dup2(int(null.Fd()), 1)
	if logFile != "" {
		if f, err := os.OpenFile(logFile, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640); err == nil {
			_ = syscall.Dup2(int(f.Fd()), 2)
			f.Close()
			return
		}
	}
	_ = syscall.Dup2(int(null.Fd()), 2)
	if w, err := syslog.New(syslog.LOG_DAEMON|syslog.LOG_WARNING, "mossfs"); err == nil {
		logger.SetOutput(w)
		logger.SetPrefix("")
	}
}

var fuseServe fuseServeOpts

var fuseServeCmd = &cobra.Command{
	Use:    "fuse-serve",
	Short:  "Serve a transaction through FUSE (the daemon behind mount --driver fuse)",
	Hidden: true,
	Args:   cobra.NoArgs,
	RunE: func(cmd *cobra.Command, args []string) error {
		if fuseServe.image == "" || fuseServe.objects == "" || fuseServe.target == "" {
			return errors.New("fuse-serve needs --image, --objects and --target")
		}
		var ready *os.File
		if fuseServe.readyFd > 0 {
			ready = os.NewFile(uintptr(fuseServe.readyFd), "ready")
			if ready == nil {
				return fmt.Errorf("fuse-serve: bad --ready-fd %d", fuseServe.readyFd)
			}
		}
		return fuseServe.run(ready)
	},
}

func init() {
	f := fuseServeCmd.Flags()
	f.StringVar(&fuseServe.image, "image", "", "EROFS image of the transaction")
	f.StringVar(&fuseServe.objects, "objects", "", "object directory")
	f.StringVar(&fuseServe.target, "target", "", "mount point")
	f.BoolVar(&fuseServe.beneath, "beneath", false, "mount beneath the mount at the target and unmount that one (root)")
	f.BoolVar(&fuseServe.noVerify, "no-verify", false, "serve objects without checking their digests")
	f.BoolVar(&fuseServe.passthrough, "passthrough", false, "use FUSE passthrough for file content where the kernel allows it (root, Linux ≥ 6.9); also MOSSFS_FUSE_PASSTHROUGH=1")
	f.BoolVar(&fuseServe.debug, "debug", false, "log every FUSE request")
	f.IntVar(&fuseServe.readyFd, "ready-fd", 0, "descriptor to report readiness on")
	f.StringVar(&fuseServe.logFile, "log", "", "log file of the background daemon")
	rootCmd.AddCommand(fuseServeCmd)
}
