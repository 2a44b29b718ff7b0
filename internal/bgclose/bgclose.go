// Package bgclose closes file descriptors whose last close would do slow
// work in the caller, and leaves that work to a kernel worker: tearing
// down an unmounted tree (its superblocks, every cached dentry and inode of
// it) or freeing the inode and blocks of a replaced file.
//
// A process cannot put that work in the background by itself: the kernel
// runs the final release of a file in the task that dropped the last
// reference, on its way back from the system call, and a process that exits
// first runs it on its way out, before its parent sees it exit. With 4
// threads reading the old tree (so with its caches to tear down), mossfs
// switch's CPU time over mossfs --version went from 8.6-9.8 ms to
// 5.1-5.4 ms once the teardown left it (BenchmarkSwitch, 200 pairs, two
// runs of each on the shared machine at load 5-8).
//
// The way out is io_uring: the descriptors are registered as the fixed
// files of a ring that is never used otherwise, and then both are closed.
// The ring holds the last references, and the kernel frees a ring and its
// fixed files from a workqueue, whose final release of each file is again
// deferred to a kernel worker. Where io_uring cannot be had (an old
// kernel, kernel.io_uring_disabled, a seccomp filter), Release says so and
// the caller closes the descriptors itself.
//
// A file system stays busy until the worker has let go of the files handed
// over from it: an unmount right after Release fails with EBUSY. That is
// why package durable frees the files it replaces itself.
package bgclose

import (
	"github.com/mossfs/mossfs/internal/uring"
	"golang.org/x/sys/unix"
)

// Release closes fds, leaving their last release to a kernel worker, and
// reports true. Where it cannot (no io_uring, or a descriptor opened with
// O_PATH, which io_uring does not take), it closes nothing and reports
// false: the caller closes them as it would have.
func Release(fds ...int) bool {
	if len(fds) == 0 {
		return true
	}
	ring := handOver(fds)
	if ring < 0 {
		return false
	}
	for _, fd := range fds {
		unix.Close(fd)
	}
	// Only now: a ring freed before the caller's descriptors are closed
	// would leave the last references to the caller again.
	unix.Close(ring)
	return true
}

// handOver registers fds as the fixed files of a new ring and returns the
// ring (-1 if io_uring cannot be had or refuses one of fds).
func handOver(fds []int) int {
	var p uring.Params
	ring, err := uring.Setup(1, &p)
	if err != nil {
		return -1
	}
	files := make([]int32, len(fds))
	for i, fd := range fds {
		files[i] = int32(fd)
	}
	if err := uring.RegisterFiles(ring, files); err != nil {
		unix.Close(ring)
		return -1
	}
	return ring
}
