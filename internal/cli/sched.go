package cli

import (
	"fmt"
	"os/exec"
	"runtime"
	"strconv"
	"sync"
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

// SwitchBoost is how much lower than the nice value it was started with a
// switch (and a rollback) sets its own: a higher priority.
//
// Why: once the wake-ups are quick (ShortSlice), a switch on CPUs that
// other threads keep busy takes as long as its CPU time divided by its share
// of the CPUs: with 4 busy threads on 2 CPUs, a share of 2/5 of a CPU, so
// 2.5 times its CPU time. Ten levels give it about nine times the weight of
// a default thread for its few milliseconds, so that it takes about as long
// as on idle CPUs. It uses no more CPU for that (1.7–2.0 ms over mossfs
// --version either way): the other threads give up the same CPU time, only
// sooner. BenchmarkSwitch, 4 readers, beside a build without it in the same
// run, median cost over mossfs --version: 1.7 ms against 5.3 ms (1000
// pairs); with 5 levels 2.4–2.9 ms against 5.4–6.0 ms, with 3 levels 2.9 ms
// against 5.2 ms (600 pairs); idle, 1.4–1.5 ms. What the switch starts gets
// the process's starting nice value back: the FUSE daemon (StartUnboosted)
// and the system triggers (SetSched with no boost, once the switch is
// done). Lowering the nice value needs CAP_SYS_NICE (or RLIMIT_NICE):
// without it the switch runs unboosted.
const SwitchBoost = 10

// Sched is what a mossfs process asks of the scheduler for all its threads.
type Sched struct {
	// Slice is the time slice in nanoseconds (sched_setattr's
	// sched_runtime for SCHED_OTHER); 0 asks for the kernel's default.
	Slice uint64
	// Boost is how much to lower the nice value from the one the process
	// was started with (as the first SetSched found it), down to -20; 0
	// keeps that value.
	Boost int
}

var startNice = struct {
	once sync.Once
	nice int
	err  error
}{}

// StartNice is the nice value the process was started with: the calling
// thread's when the process first asks (SetSched or StartNice).
func StartNice() (int, error) {
	startNice.once.Do(func() {
		// The raw system call returns 20-nice.
		prio, err := unix.Getpriority(unix.PRIO_PROCESS, 0)
		if err != nil {
			startNice.err = fmt.Errorf("getpriority: %w", err)
			return
		}
		startNice.nice = 20 - prio
	})
	return startNice.nice, startNice.err
}

// attr is the sched_setattr request for s, keeping each thread's policy
// (SCHED_BATCH stays SCHED_BATCH; real-time policies ignore sched_runtime
// and the nice value).
func (s Sched) attr() (unix.SchedAttr, error) {
	nice, err := StartNice()
	if err != nil {
		return unix.SchedAttr{}, err
	}
	return unix.SchedAttr{
		Size:    uint32(unsafe.Sizeof(unix.SchedAttr{})),
		Flags:   unix.SCHED_FLAG_KEEP_POLICY,
		Nice:    int32(max(nice-s.Boost, -20)),
		Runtime: s.Slice,
	}, nil
}

// SetSched asks the kernel to schedule every thread of the process as s
// says. Threads started later inherit it from the thread that starts them,
// and so do programs the process runs: ask again with the defaults
// (Sched{}) before running a program that should not have it, or start it
// with StartUnboosted. A boost the process may not have (no CAP_SYS_NICE)
// is dropped and the slice still asked for. Kernels before 6.12 ignore the
// slice; any error (a seccomp filter, a policy the caller may not keep)
// leaves the threads concerned as they were and is returned for tests
// only: scheduling is a hint.
//
// A thread whose start had begun before the thread starting it was set,
// and that shows in the process's thread list only after SetSched's last
// look, keeps what it inherited: the kernel copies the scheduling at the
// start of clone and lists the thread at its end, and nothing tells a
// process which of its threads are inside clone. The Go runtime starts
// threads on its own (SetSched's own system calls can make it), so this
// happens; such a thread only runs with the default slice.
func SetSched(s Sched) error {
	_, err := setSched(s)
	return err
}

// setSched is SetSched, also returning the threads it has set: those of
// its last listing, which is what it can vouch for.
func setSched(s Sched) (map[int]bool, error) {
	attr, err := s.attr()
	if err != nil {
		return nil, err
	}
	// Threads that start while this runs inherit the attributes of the
	// thread that starts them, which may not have been set yet: list them
	// again until a listing has no new thread.
	done := map[int]bool{}
	var first error
	for {
		tids, err := threads()
		if err != nil {
			return nil, err
		}
		fresh := 0
		for _, tid := range tids {
			if done[tid] {
				continue
			}
			done[tid] = true
			fresh++
			a := attr
			err := unix.SchedSetAttr(tid, &a, 0)
			if err == unix.EPERM && s.Boost > 0 {
				// No right to a lower nice value: the rest, unboosted.
				s.Boost = 0
				if attr, err = s.attr(); err != nil {
					return nil, err
				}
				a = attr
				err = unix.SchedSetAttr(tid, &a, 0)
			}
			// A thread may have exited since the listing (ESRCH).
			if err != nil && err != unix.ESRCH && first == nil {
				first = fmt.Errorf("sched_setattr of thread %d: %w", tid, err)
			}
		}
		if fresh == 0 {
			return done, first
		}
	}
}

// StartUnboosted starts cmd as the process was started: at its starting
// nice value and the default time slice, whatever SetSched asked for since.
// A child gets its scheduling from the thread that forks it, so only that
// thread changes, for as long as the fork takes.
func StartUnboosted(cmd *exec.Cmd) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	tid := unix.Gettid()
	saved, err := unix.SchedGetAttr(tid, 0)
	if err != nil {
		return cmd.Start() // nothing asked for here either
	}
	plain, err := Sched{}.attr()
	if err == nil {
		err = unix.SchedSetAttr(tid, &plain, 0)
	}
	if err != nil {
		return cmd.Start()
	}
	serr := cmd.Start()
	saved.Flags |= unix.SCHED_FLAG_KEEP_POLICY
	unix.SchedSetAttr(tid, saved, 0)
	return serr
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
