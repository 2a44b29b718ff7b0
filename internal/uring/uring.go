// Package uring is the little of io_uring(7) that mossfs uses, on bare
// system calls (no io_uring module is among the Go modules at hand): a
// ring set up only to hold files, for package bgclose.
package uring

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Params is struct io_uring_params (include/uapi/linux/io_uring.h).
type Params struct {
	SQEntries, CQEntries, Flags, SQThreadCPU, SQThreadIdle, Features, WQFD uint32
	resv                                                                   [3]uint32
	SQOff, CQOff                                                           [10]uint32 // struct io_sqring_offsets, io_cqring_offsets
}

// Setup is io_uring_setup(2): a new ring of entries submission entries,
// as its file descriptor (close-on-exec).
func Setup(entries uint32, p *Params) (int, error) {
	fd, _, errno := unix.Syscall(unix.SYS_IO_URING_SETUP, uintptr(entries), uintptr(unsafe.Pointer(p)), 0)
	if errno != 0 {
		return -1, fmt.Errorf("io_uring_setup: %w", errno)
	}
	return int(fd), nil
}

// RegisterFiles is io_uring_register(2) IORING_REGISTER_FILES: the ring
// holds a reference to each file until it is freed.
func RegisterFiles(ring int, fds []int32) error {
	if len(fds) == 0 {
		return nil
	}
	_, _, errno := unix.Syscall6(unix.SYS_IO_URING_REGISTER, uintptr(ring), ioringRegisterFiles, uintptr(unsafe.Pointer(&fds[0])), uintptr(len(fds)), 0, 0)
	if errno != 0 {
		return fmt.Errorf("io_uring_register files: %w", errno)
	}
	return nil
}

const ioringRegisterFiles = 2
