package main

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mossfs/mossfs/internal/cli"
	"github.com/mossfs/mossfs/internal/fusefs"
	"github.com/mossfs/mossfs/internal/mountrec"
	"github.com/mossfs/mossfs/internal/testenv"
	"github.com/mossfs/mossfs/mounttuck"
	"github.com/mossfs/mossfs/overlay/overlaytest"
	"golang.org/x/sys/unix"
)

// TestMountCommandFUSEDriver mounts, switches and unmounts through the FUSE
// driver (whose daemon is this test binary acting as mossfs).
func TestMountCommandFUSEDriver(t *testing.T) {
	testenv.RequireMountNS(t)
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skipf("no FUSE: %v", err)
	}
	t.Setenv(asMossfsEnv, "1")
	s := newStateRoot(t)
	target := scratchTarget(t)
	// A daemon serves until its mount goes; make sure it goes.
	t.Cleanup(func() {
		for range 4 {
			unix.Unmount(target, unix.MNT_DETACH)
		}
	})

	mustRun(t, "mount", "--root", s.root, "--driver", "fuse", "1", target)
	overlaytest.Compare(t, target, s.txs[1])
	rec, ok, err := mountrec.Get(s.root, target)
	if err != nil || !ok || rec.Tx != 1 || rec.Driver != "fuse" || rec.Verity != "digest-check" {
		t.Fatalf("record %+v %v %v", rec, ok, err)
	}
	rep := status(t, s.root)
	if len(rep.Mounts) != 1 || rep.Mounts[0].Driver != "fuse" || !rep.Mounts[0].Mounted {
		t.Fatalf("status: %+v", rep)
	}

	// Page-cached daemon reads by default; --fuse-passthrough asks for
	// passthrough (which the kernel here allows: root, Linux ≥ 6.9).
	if st, err := fusefs.Query(target); err != nil || st.Passthrough {
		t.Fatalf("default FUSE mount: %+v %v, want no passthrough", st, err)
	}
	// Boosted as main boosts a switch (cli.SwitchBoost): the daemon the
	// switch starts must not be, it serves long after.
	nice, _ := cli.StartNice()
	cli.SetSched(cli.Sched{Slice: cli.ShortSlice, Boost: cli.SwitchBoost})
	mustRun(t, "switch", "--root", s.root, "--target", target, "--driver", "fuse", "--fuse-passthrough", "2")
	cli.SetSched(cli.Sched{})
	overlaytest.Compare(t, target, s.txs[2])
	checkDaemonSched(t, target, nice)
	if st, err := fusefs.Query(target); err != nil || !st.Passthrough {
		t.Errorf("FUSE mount with --fuse-passthrough: %+v %v, want passthrough", st, err)
	}
	if n := mountCount(t, target); n != 1 {
		t.Fatalf("%d mounts at target after a FUSE switch", n)
	}
	mustRun(t, "switch", "--root", s.root, "--target", target, "--driver", "overlay", "3")
	overlaytest.Compare(t, target, s.txs[3])
	if n := mountCount(t, target); n != 1 {
		t.Fatalf("%d mounts at target after switching FUSE → overlay", n)
	}
	mustRun(t, "switch", "--root", s.root, "--target", target, "--driver", "fuse", "1")
	overlaytest.Compare(t, target, s.txs[1])
	mustRun(t, "umount", "--root", s.root, target)
	if n := mountCount(t, target); n != 0 {
		t.Fatalf("%d mounts left after umount", n)
	}
}

// TestMountCommandFUSEForeground serves in this process until unmounted;
// the record exists exactly while it serves.
func TestMountCommandFUSEForeground(t *testing.T) {
	testenv.RequireMountNS(t)
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skipf("no FUSE: %v", err)
	}
	s := newStateRoot(t)
	target := scratchTarget(t)
	listening := controlListeners(t)
	done := make(chan error, 1)
	go func() {
		_, _, err := run("mount", "--root", s.root, "--foreground", "2", target)
		done <- err
	}()
	t.Cleanup(func() { unix.Unmount(target, unix.MNT_DETACH) })
	for i := 0; ; i++ {
		if m, _ := mounttuck.MountsAt(target); len(m) == 1 {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("mount --foreground returned before mounting: %v", err)
		default:
		}
		if i == 1000 {
			t.Fatal("no FUSE mount after 10 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	overlaytest.Compare(t, target, s.txs[2])
	if rec, ok, _ := mountrec.Get(s.root, target); !ok || rec.Tx != 2 || rec.Driver != "fuse" {
		t.Fatalf("record while serving: %+v %v", rec, ok)
	}
	if err := unix.Unmount(target, 0); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("mount --foreground: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("mount --foreground still serving 30 s after the unmount")
	}
	if _, ok, _ := mountrec.Get(s.root, target); ok {
		t.Fatal("record left after the foreground server ended")
	}
	// Its control socket went with it: left open, it would answer for the
	// next mount given the same device number (the kernel hands the number
	// out again at once) in place of that mount's own daemon.
	if l := controlListeners(t); len(l) > len(listening) {
		t.Errorf("control sockets %v still listening after the foreground server ended (before it: %v)", l, listening)
	}
}

// controlListeners returns the names of the FUSE daemons' control sockets
// (see internal/fusefs) that this process listens on.
func controlListeners(t *testing.T) []string {
	t.Helper()
	ours := map[string]bool{}
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	for _, fd := range fds {
		if l, err := os.Readlink("/proc/self/fd/" + fd.Name()); err == nil && strings.HasPrefix(l, "socket:[") {
			ours[strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")] = true
		}
	}
	data, err := os.ReadFile("/proc/self/net/unix")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	// Num RefCount Protocol Flags Type St Inode Path; Flags 00010000: listening.
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 8 && f[3] == "00010000" && ours[f[6]] && strings.HasPrefix(f[7], "@mossfs-fuse/") {
			names = append(names, f[7])
		}
	}
	return names
}

// checkDaemonSched: every thread of the FUSE daemon serving target runs at
// nice value nice and the kernel's default slice.
func checkDaemonSched(t *testing.T, target string, nice int) {
	t.Helper()
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	found := 0
	for _, c := range procs {
		b, err := os.ReadFile(c)
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00")
		if len(args) < 2 || args[1] != "fuse-serve" || !slices.Contains(args, target) {
			continue
		}
		tasks, _ := filepath.Glob(filepath.Join(filepath.Dir(c), "task", "*"))
		for _, task := range tasks {
			tid, _ := strconv.Atoi(filepath.Base(task))
			a, err := unix.SchedGetAttr(tid, 0)
			if err != nil {
				continue
			}
			found++
			if int(a.Nice) != nice || a.Runtime == cli.ShortSlice {
				t.Errorf("FUSE daemon thread %d: nice %d, slice %d ns; want nice %d and the default slice", tid, a.Nice, a.Runtime, nice)
			}
		}
	}
	if found == 0 {
		t.Errorf("no FUSE daemon (fuse-serve … %s) found", target)
	}
}
