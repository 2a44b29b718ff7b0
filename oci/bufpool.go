package oci

import (
	"math/bits"
	"sync"
)

// bufPool keeps buffers for reuse in power-of-two sizes from 4 KiB to
// 32 MiB, up to bufPoolKeep bytes in all. Unlike a sync.Pool it keeps them
// across garbage collections: a buffer used again is memory the process
// already touched, where a new one costs zeroing and a page fault per
// 4 KiB (about 200k faults in an export of the 65k-entry tree, each a
// trip through the hypervisor on the development machines).
type bufPool struct {
	mu    sync.Mutex
	free  [bufClasses][][]byte
	bytes int
}

const (
	bufMinShift = 12
	bufClasses  = 14
	bufPoolKeep = 192 << 20
)

// bufClass is the class of the smallest buffer that holds n bytes.
func bufClass(n int) int {
	if n <= 1<<bufMinShift {
		return 0
	}
	return bits.Len(uint(n-1)) - bufMinShift
}

// get returns a buffer of length n (its contents are not zeroed).
func (p *bufPool) get(n int) []byte {
	c := bufClass(n)
	if c >= bufClasses {
		return make([]byte, n)
	}
	p.mu.Lock()
	if l := len(p.free[c]); l > 0 {
		b := p.free[c][l-1]
		p.free[c][l-1] = nil
		p.free[c] = p.free[c][:l-1]
		p.bytes -= cap(b)
		p.mu.Unlock()
		return b[:n]
	}
	p.mu.Unlock()
	return make([]byte, n, 1<<(c+bufMinShift))
}

// put gives b back; buffers get did not make (grown or foreign) are left
// to the garbage collector.
func (p *bufPool) put(b []byte) {
	c := bufClass(cap(b))
	if c >= bufClasses || cap(b) != 1<<(c+bufMinShift) {
		return
	}
	p.mu.Lock()
	if p.bytes+cap(b) <= bufPoolKeep {
		p.free[c] = append(p.free[c], b[:0])
		p.bytes += cap(b)
	}
	p.mu.Unlock()
}
