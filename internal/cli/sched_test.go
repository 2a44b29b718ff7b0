package cli

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	slices2 "slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// threadSched is the kernel's view: each thread's time slice and nice
// value as sched_getattr reports them (Linux 6.12+ reports the slice of a
// SCHED_OTHER thread in sched_runtime; older kernels report 0).
func threadSched(t *testing.T, pid int) map[int]unix.SchedAttr {
	t.Helper()
	d, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		t.Fatal(err)
	}
	m := map[int]unix.SchedAttr{}
	for _, e := range d {
		tid, _ := strconv.Atoi(e.Name())
		a, err := unix.SchedGetAttr(tid, 0)
		if err == unix.ESRCH {
			continue
		}
		if err != nil {
			t.Fatalf("sched_getattr %d: %v", tid, err)
		}
		m[tid] = *a
	}
	return m
}

// TestSetSched: every thread gets the slice and the boost asked for, and
// Sched{} gives back the default slice and the starting nice value; a
// process without CAP_SYS_NICE still gets the slice, unboosted; a program
// started with StartUnboosted is neither, while its parent stays boosted.
func TestSetSched(t *testing.T) {
	if os.Getenv(schedChildEnv) != "" {
		schedChild(t)
		return
	}
	for _, a := range threadSched(t, os.Getpid()) {
		if a.Runtime == 0 {
			t.Skip("this kernel reports no time slices (custom slices came in Linux 6.12)")
		}
	}
	if os.Geteuid() != 0 {
		t.Skip("lowering the nice value needs root (CAP_SYS_NICE)")
	}
	t.Cleanup(func() { SetSched(Sched{}) })
	// More threads than the runtime has started by itself.
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			<-stop
		}()
	}
	defer func() { close(stop); wg.Wait() }()
	for len(threadSched(t, os.Getpid())) < 5 {
		runtime.Gosched()
	}
	nice, err := StartNice()
	if err != nil {
		t.Fatal(err)
	}
	// set asks for s and checks every thread SetSched vouches for (see its
	// doc comment for the threads it cannot); the 5 threads started above
	// must be among them.
	var seen map[int]bool
	set := func(s Sched) {
		t.Helper()
		var err error
		if seen, err = setSched(s); err != nil {
			t.Fatal(err)
		}
		if len(seen) < 5 {
			t.Fatalf("SetSched set %d threads, want at least 5", len(seen))
		}
	}
	check := func(what string, slice uint64, wantNice int) {
		t.Helper()
		for tid, a := range threadSched(t, os.Getpid()) {
			bad := (slice != 0 && a.Runtime != slice) || (slice == 0 && a.Runtime == ShortSlice) || int(a.Nice) != wantNice
			if bad && !seen[tid] {
				t.Logf("%s: thread %d, started while SetSched ran, has slice %d ns, nice %d", what, tid, a.Runtime, a.Nice)
			} else if bad {
				t.Errorf("%s: thread %d: slice %d ns, nice %d; want slice %d (0: the default), nice %d", what, tid, a.Runtime, a.Nice, slice, wantNice)
			}
		}
	}
	set(Sched{Slice: ShortSlice})
	check("short slice", ShortSlice, nice)
	set(Sched{Slice: ShortSlice, Boost: SwitchBoost})
	check("boosted", ShortSlice, max(nice-SwitchBoost, -20))

	// A child started unboosted: it reports its own view, then the
	// parent's threads must still be boosted.
	cmd := exec.Command(os.Args[0], "-test.run=^TestSetSched$", "-test.count=1")
	cmd.Env = append(os.Environ(), schedChildEnv+"=unboosted")
	out, err := func() ([]byte, error) {
		var b strings.Builder
		cmd.Stdout, cmd.Stderr = &b, &b
		if err := StartUnboosted(cmd); err != nil {
			return nil, err
		}
		err := cmd.Wait()
		return []byte(b.String()), err
	}()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), fmt.Sprintf("child: nice %d slice default", nice)) {
		t.Errorf("child started with StartUnboosted:\n%s\nwant nice %d and the default slice", out, nice)
	}
	check("boosted, after StartUnboosted", ShortSlice, max(nice-SwitchBoost, -20))

	set(Sched{})
	check("defaults", 0, nice)

	// Without CAP_SYS_NICE (and RLIMIT_NICE 0) a boost is refused: the
	// child must still get the short slice, at its own nice value.
	cmd = exec.Command(os.Args[0], "-test.run=^TestSetSched$", "-test.count=1")
	cmd.Env = append(os.Environ(), schedChildEnv+"=nocap")
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), fmt.Sprintf("child: nice %d slice %d", nice, ShortSlice)) {
		t.Errorf("child without CAP_SYS_NICE asking for a boost: %v\n%s\nwant nice %d and slice %d", err, out, nice, ShortSlice)
	}
}

const schedChildEnv = "MOSSFS_TEST_SCHED_CHILD"

// schedChild reports its threads' scheduling, after asking for a boost
// first when it has no right to one.
func schedChild(t *testing.T) {
	var seen map[int]bool
	if os.Getenv(schedChildEnv) == "nocap" {
		var r unix.Rlimit
		if err := unix.Setrlimit(unix.RLIMIT_NICE, &r); err != nil {
			t.Fatal(err)
		}
		// Capabilities belong to threads: this one drops CAP_SYS_NICE
		// and asks for all.
		runtime.LockOSThread()
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		var data [2]unix.CapUserData
		if err := unix.Capget(&hdr, &data[0]); err != nil {
			t.Fatal(err)
		}
		data[0].Effective &^= 1 << unix.CAP_SYS_NICE
		data[0].Permitted &^= 1 << unix.CAP_SYS_NICE
		if err := unix.Capset(&hdr, &data[0]); err != nil {
			t.Fatal(err)
		}
		seen, _ = setSched(Sched{Slice: ShortSlice, Boost: SwitchBoost})
		runtime.UnlockOSThread()
	}
	var nices, slices []string
	for tid, a := range threadSched(t, os.Getpid()) {
		if seen != nil && !seen[tid] {
			continue // started while SetSched ran: see its doc comment
		}
		nices = append(nices, strconv.Itoa(int(a.Nice)))
		s := strconv.FormatUint(a.Runtime, 10)
		if a.Runtime != ShortSlice {
			s = "default"
		}
		slices = append(slices, s)
	}
	slices, nices = slices2.Compact(slices2.Sorted(slices2.Values(slices))), slices2.Compact(slices2.Sorted(slices2.Values(nices)))
	fmt.Printf("child: nice %s slice %s\n", strings.Join(nices, ","), strings.Join(slices, ","))
}
