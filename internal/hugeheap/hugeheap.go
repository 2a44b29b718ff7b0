// Package hugeheap grows the Go heap ahead of a large build into memory the
// kernel backs with transparent huge pages, so that the build takes one
// page fault per 2 MiB instead of one per 4 KiB page it first writes.
//
// A short-lived command that builds a large tree or image in new memory
// (mkcomposefs of a 65k-entry dump: ~30 MB of heap, ~7,700 faults) spends
// most of its system time in those faults; on a virtual machine each
// fault's entry and exit cost more than the page itself. The runtime asks
// for no huge pages, and where the system's setting is "madvise" (Debian's
// default) it gets none. Grow allocates a block of the size asked, marks
// its memory MADV_HUGEPAGE, and frees it at once (a collection): the
// allocator hands that memory out again, lowest addresses first, to what
// the command allocates next. Memory never touched costs no page at all,
// so a generous size costs only address space.
//
// It suits a process that runs with the collector off (GOGC=off or
// debug.SetGCPercent(-1)), as the builds that use it do: with the
// collector on, the scavenger may return the freed memory to the system
// before it is used again.
package hugeheap

import (
	"bytes"
	"os"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// hugePage is the size of a transparent huge page (PMD) on x86-64 and
// arm64 with 4 KiB pages: only whole, aligned ones are mapped huge.
const hugePage = 2 << 20

// MinSize is the size below which Grow does nothing: the collection it
// runs costs more than the faults it saves.
const MinSize = 8 << 20

// Grow makes about n bytes of new heap memory ready for what the process
// allocates next, mapped in huge pages where the kernel allows. It does
// nothing for n < MinSize, and unless the system gives huge pages on
// request only ("madvise"): with "never" there are none to have, with
// "always" the heap gets them without asking.
func Grow(n int) {
	if n < MinSize || !onRequest() {
		return
	}
	b := make([]byte, n)
	// The block is fresh memory the allocator has not touched (large
	// blocks are not zeroed by the runtime when the system gave them zeroed).
	base := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	start := (base + hugePage - 1) &^ (hugePage - 1)
	end := (base + uintptr(n)) &^ (hugePage - 1)
	if end > start {
		_ = unix.Madvise(b[start-base:end-base], unix.MADV_HUGEPAGE)
	}
	runtime.KeepAlive(b)
	b = nil
	// The block is garbage now: collect it, so that its pages are free
	// for the next allocations (runtime.GC returns after sweeping).
	runtime.GC()
}

// onRequest reports whether the system's transparent huge pages are
// "madvise": given to memory marked MADV_HUGEPAGE, and only to it.
func onRequest() bool {
	b, err := os.ReadFile("/sys/kernel/mm/transparent_hugepage/enabled")
	return err == nil && bytes.Contains(b, []byte("[madvise]"))
}
