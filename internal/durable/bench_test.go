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
// commit-us the time Commit takes: both are on the switch's critical path.
func BenchmarkSwitchBatch(b *testing.B) {
	dirs := []string{b.TempDir(), b.TempDir(), b.TempDir()}
	var begin, commit time.Duration
	for i := 0; i < b.N; i++ {
		files := []File{
			{Path: filepath.Join(dirs[0], "active"), Data: []byte(fmt.Sprint(i, "\n"))},
			{Path: filepath.Join(dirs[1], ".previous-active"), Data: []byte(fmt.Sprint(i, "\n"))},
			{Path: filepath.Join(dirs[2], "loader.conf"), Data: []byte(fmt.Sprint("default mossfs-", i, ".conf\n"))},
			{Path: filepath.Join(dirs[1], "usr.json"), Data: make([]byte, 464)},
		}
		t0 := time.Now()
		bt := Begin(files...)
		t1 := time.Now()
		unix.Nanosleep(&unix.Timespec{Nsec: 1500000}, nil)
		t2 := time.Now()
		if err := bt.Commit(); err != nil {
			b.Fatal(err)
		}
		begin += t1.Sub(t0)
		commit += time.Since(t2)
	}
	b.ReportMetric(float64(begin.Microseconds())/float64(b.N), "begin-us")
	b.ReportMetric(float64(commit.Microseconds())/float64(b.N), "commit-us")
}
