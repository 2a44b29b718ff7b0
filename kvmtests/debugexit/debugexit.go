// Package debugexit ends a QEMU guest with a status through QEMU's
// isa-debug-exit device: a byte written to I/O port 0xf4 makes QEMU exit
// with (value<<1)|1. Debian kernels have no /dev/port, so the guest asks for
// port access with ioperm(2) and executes OUTB itself.
package debugexit

import (
	"fmt"
	"runtime"
)

// Port is the isa-debug-exit iobase the harness configures.
const Port = 0xf4

// Exit writes code to the isa-debug-exit port; QEMU then exits with
// status code<<1|1 (0 → 1 "pass", 1 → 3 "fail"). It returns only if the
// write had no effect (no such device) or port access was refused.
func Exit(code byte) error {
	// ioperm grants access to the calling thread only.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := ioperm(Port, 4, true); err != nil {
		return fmt.Errorf("ioperm(%#x): %w", Port, err)
	}
	outb(Port, code)
	return fmt.Errorf("write to port %#x did not stop the machine (no isa-debug-exit device?)", Port)
}
