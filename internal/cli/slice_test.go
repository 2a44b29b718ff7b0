package cli

import (
	"os"
	"runtime"
	"strconv"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// threadSlices is the kernel's view: each thread's time slice as
// sched_getattr reports it (Linux 6.12+ reports the slice of a SCHED_OTHER
// thread in sched_runtime; older kernels report 0).
func threadSlices(t *testing.T) map[int]uint64 {
	t.Helper()
	d, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	m := map[int]uint64{}
	for _, e := range d {
		tid, _ := strconv.Atoi(e.Name())
		a, err := unix.SchedGetAttr(tid, 0)
		if err == unix.ESRCH {
			continue
		}
		if err != nil {
			t.Fatalf("sched_getattr %d: %v", tid, err)
		}
		m[tid] = a.Runtime
	}
	return m
}

func TestSetSlice(t *testing.T) {
	before := threadSlices(t)
	for _, s := range before {
		if s == 0 {
			t.Skip("this kernel reports no time slices (custom slices came in Linux 6.12)")
		}
	}
	t.Cleanup(func() { SetSlice(0) })
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
	for len(threadSlices(t)) < 5 {
		runtime.Gosched()
	}
	nice, err := unix.Getpriority(unix.PRIO_PROCESS, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := SetSlice(ShortSlice); err != nil {
		t.Fatal(err)
	}
	after := threadSlices(t)
	for tid, s := range after {
		if s != ShortSlice {
			t.Errorf("thread %d: slice %d ns after SetSlice(%d)", tid, s, ShortSlice)
		}
	}
	if n, _ := unix.Getpriority(unix.PRIO_PROCESS, 0); n != nice {
		t.Errorf("nice value changed: %d, was %d", 20-n, 20-nice)
	}
	if err := SetSlice(0); err != nil {
		t.Fatal(err)
	}
	for tid, s := range threadSlices(t) {
		if s == ShortSlice {
			t.Errorf("thread %d: still the short slice after SetSlice(0)", tid)
		}
	}
}
