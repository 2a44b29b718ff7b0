package main

import (
	"os"
	"strings"
	"testing"
	"time"

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
	mustRun(t, "switch", "--root", s.root, "--target", target, "--driver", "fuse", "--fuse-passthrough", "2")
	overlaytest.Compare(t, target, s.txs[2])
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
