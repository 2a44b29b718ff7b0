// Package uring is the little of io_uring(7) that mossfs uses, on bare
// system calls (no io_uring library is among the Go modules at hand, and
// this needs three calls and two shared rings): a ring that runs fsyncs
// at the same time in the kernel's own workers, with one system call to
// start a round and one to wait for it, and rings set up only to hold
// files (package bgclose).
//
// Why, for the fsyncs of package durable: from Go, N fsyncs at once take N
// goroutines blocked in system calls, so N threads (the runtime starts
// new ones for the blocked ones), each woken when its disk write is done,
// and the runtime's monitor thread polling every 20 µs while they block.
// On two busy cores every extra thread and wake-up waits for a time slice.
package uring

import (
	"errors"
	"fmt"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Params is struct io_uring_params (include/uapi/linux/io_uring.h).
type Params struct {
	SQEntries, CQEntries, Flags, SQThreadCPU, SQThreadIdle, Features, WQFD uint32
	resv                                                                   [3]uint32
	SQOff                                                                  sqOffsets
	CQOff                                                                  cqOffsets
}

// sqOffsets is struct io_sqring_offsets.
type sqOffsets struct {
	Head, Tail, RingMask, RingEntries, Flags, Dropped, Array, resv1 uint32
	UserAddr                                                        uint64
}

// cqOffsets is struct io_cqring_offsets.
type cqOffsets struct {
	Head, Tail, RingMask, RingEntries, Overflow, CQEs, Flags, resv1 uint32
	UserAddr                                                        uint64
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

const (
	ioringRegisterFiles  = 2
	ioringOpFsync        = 3
	ioringEnterGetevents = 1
	ioringFeatSingleMmap = 1
	ioringOffSQRing      = 0
	ioringOffCQRing      = 0x8000000
	ioringOffSQEs        = 0x10000000
	sqeSize              = 64
	cqeSize              = 16
)

// Ring is a ring for fsyncs. Its methods are for one goroutine.
type Ring struct {
	fd             int
	sqRing, cqRing []byte // cqRing is sqRing with IORING_FEAT_SINGLE_MMAP
	sqes           []byte
	p              Params
	queued         uint32 // entries written but not yet submitted
	inflight       int    // submitted, not yet reaped
}

// ErrFull is returned by Fsync when the submission ring is full (the
// caller submits, or waits, and asks again).
var ErrFull = errors.New("io_uring: submission ring full")

// New sets up a ring of entries submission entries (a power of two).
func New(entries uint32) (*Ring, error) {
	r := &Ring{}
	fd, err := Setup(entries, &r.p)
	if err != nil {
		return nil, err
	}
	r.fd = fd
	sqSize := int(r.p.SQOff.Array + r.p.SQEntries*4)
	cqSize := int(r.p.CQOff.CQEs + r.p.CQEntries*cqeSize)
	single := r.p.Features&ioringFeatSingleMmap != 0
	if single {
		sqSize = max(sqSize, cqSize)
	}
	mmap := func(size int, off int64) ([]byte, error) {
		return unix.Mmap(fd, off, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	}
	if r.sqRing, err = mmap(sqSize, ioringOffSQRing); err != nil {
		r.Close()
		return nil, fmt.Errorf("io_uring: mapping the submission ring: %w", err)
	}
	r.cqRing = r.sqRing
	if !single {
		if r.cqRing, err = mmap(cqSize, ioringOffCQRing); err != nil {
			r.Close()
			return nil, fmt.Errorf("io_uring: mapping the completion ring: %w", err)
		}
	}
	if r.sqes, err = mmap(int(r.p.SQEntries)*sqeSize, ioringOffSQEs); err != nil {
		r.Close()
		return nil, fmt.Errorf("io_uring: mapping the submission entries: %w", err)
	}
	return r, nil
}

func (r *Ring) u32(ring []byte, off uint32) *uint32 {
	return (*uint32)(unsafe.Pointer(&ring[off]))
}

// Fsync queues an fsync of fd, to run at the next Submit or Wait; data
// comes back with its completion. The ring takes its own reference to the
// file when the fsync is submitted: fd may be closed after that.
func (r *Ring) Fsync(fd int, data uint64) error {
	tail := *r.u32(r.sqRing, r.p.SQOff.Tail)
	head := atomic.LoadUint32(r.u32(r.sqRing, r.p.SQOff.Head))
	if tail-head >= r.p.SQEntries {
		return ErrFull
	}
	i := tail & *r.u32(r.sqRing, r.p.SQOff.RingMask)
	sqe := r.sqes[int(i)*sqeSize : int(i+1)*sqeSize]
	clear(sqe)
	sqe[0] = ioringOpFsync
	*(*int32)(unsafe.Pointer(&sqe[4])) = int32(fd)
	*(*uint64)(unsafe.Pointer(&sqe[32])) = data
	*(*uint32)(unsafe.Pointer(&r.sqRing[r.p.SQOff.Array+4*i])) = i
	atomic.StoreUint32(r.u32(r.sqRing, r.p.SQOff.Tail), tail+1)
	r.queued++
	return nil
}

// Submit starts the queued fsyncs (io_uring_enter) without waiting.
func (r *Ring) Submit() error {
	return r.enter(0, 0)
}

func (r *Ring) enter(minComplete uint32, flags uintptr) error {
	for {
		n, _, errno := unix.Syscall6(unix.SYS_IO_URING_ENTER, uintptr(r.fd), uintptr(r.queued), uintptr(minComplete), flags, 0, 0)
		if errno == unix.EINTR {
			continue
		}
		if errno != 0 {
			return fmt.Errorf("io_uring_enter: %w", errno)
		}
		r.queued -= uint32(n)
		r.inflight += int(n)
		return nil
	}
}

// Completion is the result of one fsync: its data, and 0 or an errno.
type Completion struct {
	Data uint64
	Err  error
}

// Wait submits what is queued and returns once every fsync submitted has
// completed, with their results in the order they completed.
func (r *Ring) Wait() ([]Completion, error) {
	var done []Completion
	for r.queued > 0 || r.inflight > 0 {
		done = r.reap(done)
		if r.queued == 0 && r.inflight == 0 {
			break
		}
		// No more than the completion ring holds: the kernel keeps what
		// does not fit aside and moves it in as reap makes room.
		if err := r.enter(min(uint32(r.inflight)+r.queued, r.p.CQEntries), ioringEnterGetevents); err != nil {
			return done, err
		}
	}
	return done, nil
}

// reap collects the completions there are.
func (r *Ring) reap(done []Completion) []Completion {
	headp := r.u32(r.cqRing, r.p.CQOff.Head)
	head := *headp
	tail := atomic.LoadUint32(r.u32(r.cqRing, r.p.CQOff.Tail))
	mask := *r.u32(r.cqRing, r.p.CQOff.RingMask)
	for ; head != tail; head++ {
		off := r.p.CQOff.CQEs + (head&mask)*cqeSize
		c := Completion{Data: *(*uint64)(unsafe.Pointer(&r.cqRing[off]))}
		if res := *(*int32)(unsafe.Pointer(&r.cqRing[off+8])); res < 0 {
			c.Err = unix.Errno(-res)
		}
		done = append(done, c)
		r.inflight--
	}
	atomic.StoreUint32(headp, head)
	return done
}

// Close unmaps the rings and closes the ring; fsyncs still running finish
// in the kernel.
func (r *Ring) Close() error {
	if r.cqRing != nil && (r.sqRing == nil || &r.cqRing[0] != &r.sqRing[0]) {
		unix.Munmap(r.cqRing)
	}
	for _, m := range [][]byte{r.sqes, r.sqRing} {
		if m != nil {
			unix.Munmap(m)
		}
	}
	r.sqes, r.cqRing, r.sqRing = nil, nil, nil
	return unix.Close(r.fd)
}
