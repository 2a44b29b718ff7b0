package durable

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// BenchmarkSwitchBatch: the batch of a mossfs switch (four small files in
// three directories), begun, then committed after 1.5 ms in which the
// thread is blocked in the kernel, as by the system calls of the mount the
// switch builds meanwhile. begin-us is the time Begin takes in the caller,
// commit-us the time Commit takes: both are on the switch's critical path;
// cpu-us is the process's CPU time (user+sys, all threads) per batch.
// With new temporary files (as before File.Swap) and through swap files
// (as mossfs switch writes them), alternating batch by batch, so that both
// meet the same load.
func BenchmarkSwitchBatch(b *testing.B) {
	type variant struct {
		name               string
		swap               bool
		dirs               []string
		begin, commit, cpu time.Duration
	}
	vs := []*variant{{name: "temporary"}, {name: "swap", swap: true}}
	for _, v := range vs {
		v.dirs = []string{b.TempDir(), b.TempDir(), b.TempDir()}
	}
	for i := 0; i < b.N; i++ {
		for _, v := range vs {
			dirs := v.dirs
			files := []File{
				{Path: filepath.Join(dirs[0], "active"), Data: []byte(fmt.Sprint(i%2+1, "\n")), Swap: v.swap},
				{Path: filepath.Join(dirs[1], ".previous-active"), Data: []byte(fmt.Sprint(2-i%2, "\n")), Swap: v.swap},
				{Path: filepath.Join(dirs[2], "loader.conf"), Data: []byte(fmt.Sprint("default mossfs-", i%2+1, ".conf\n")), Swap: v.swap},
				{Path: filepath.Join(dirs[1], "usr.json"), Data: make([]byte, 464), Swap: v.swap},
			}
			c0 := cpuTime()
			t0 := time.Now()
			bt := Begin(files...)
			t1 := time.Now()
			unix.Nanosleep(&unix.Timespec{Nsec: 1500000}, nil)
			t2 := time.Now()
			if err := bt.Commit(); err != nil {
				b.Fatal(err)
			}
			v.commit += time.Since(t2)
			v.cpu += cpuTime() - c0
			v.begin += t1.Sub(t0)
		}
	}
	for _, v := range vs {
		per := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(b.N) }
		b.ReportMetric(per(v.begin), v.name+"-begin-us")
		b.ReportMetric(per(v.commit), v.name+"-commit-us")
		b.ReportMetric(per(v.cpu), v.name+"-cpu-us")
	}
}

// cpuTime is the process's CPU time so far (user+sys).
func cpuTime() time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
