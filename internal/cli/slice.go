package cli

import (
	"fmt"
	"strconv"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ShortSlice is the time slice mossfs's short commands ask the scheduler
// for: the shortest it grants (0.1 ms).
//
// Why: a switch blocks a dozen times (its flushes, the threads that wait for
// them, the mount) and each time it wakes it must get a CPU back. With the
// default slice (0.75 ms × (1 + log2 CPUs)) a woken task waits for the
// running one to use up its slice; with a shorter slice than the running
// task's, EEVDF lets it preempt on wakeup (Linux 6.12+, PREEMPT_SHORT). It
// does not raise the process's share of the CPUs (its weight, the nice
// value, is unchanged): it gets the same share in shorter turns, sooner.
// BenchmarkSwitch with 4 busy reader threads on 2 CPUs, 1000 pairs each:
// the switch cost 4.3–5.0 ms over mossfs --version (which also runs with it)
// against 5.5 ms with a 0.3 ms slice, 6.2 ms with 1 ms, 6.9–8.2 ms with the
// default.
const ShortSlice = 100_000

// SetSlice asks the kernel to give every thread of the process time slices
// of ns nanoseconds (sched_setattr's sched_runtime for SCHED_OTHER; 0 asks
// for the default again), keeping the threads' nice value. Threads started
// later inherit it from the thread that starts them, and so do programs the
// process runs: reset it (SetSlice(0)) before running a program that should
// not have it. Kernels before 6.12 ignore the request; any error (a seccomp
// filter, a policy the caller may not keep) leaves the process as it was and
// is returned for tests only: the slice is a hint.
func SetSlice(ns uint64) error {
	// The calling thread's nice value (the raw system call returns 20-nice).
	prio, err := unix.Getpriority(unix.PRIO_PROCESS, 0)
	if err != nil {
		return fmt.Errorf("getpriority: %w", err)
	}
	attr := unix.SchedAttr{
		Size:    uint32(unsafe.Sizeof(unix.SchedAttr{})),
		Flags:   unix.SCHED_FLAG_KEEP_POLICY, // SCHED_BATCH stays SCHED_BATCH; real-time policies ignore sched_runtime
		Nice:    int32(20 - prio),
		Runtime: ns,
	}
	// Threads that start while this runs inherit the slice of the thread
	// that starts them, which may not have been set yet: list them again
	// until a listing has no new thread.
	done := map[int]bool{}
	var first error
	for {
		tids, err := threads()
		if err != nil {
			return err
		}
		fresh := 0
		for _, tid := range tids {
			if done[tid] {
				continue
			}
			done[tid] = true
			fresh++
			a := attr
			// A thread may have exited since the listing (ESRCH).
			if err := unix.SchedSetAttr(tid, &a, 0); err != nil && err != unix.ESRCH && first == nil {
				first = fmt.Errorf("sched_setattr of thread %d: %w", tid, err)
			}
		}
		if fresh == 0 {
			return first
		}
	}
}

// threads lists the process's threads. Bare system calls, not os.ReadDir:
// os.File would try the poller for the directory (four more system calls)
// on every mossfs start.
func threads() ([]int, error) {
	fd, err := unix.Open("/proc/self/task", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("listing the threads: %w", err)
	}
	defer unix.Close(fd)
	var buf [2048]byte
	var names []string
	for {
		n, err := unix.ReadDirent(fd, buf[:])
		if err != nil {
			return nil, fmt.Errorf("listing the threads: %w", err)
		}
		if n <= 0 {
			break
		}
		_, _, names = unix.ParseDirent(buf[:n], -1, names)
	}
	tids := make([]int, 0, len(names))
	for _, name := range names {
		if tid, err := strconv.Atoi(name); err == nil {
			tids = append(tids, tid)
		}
	}
	return tids, nil
}
