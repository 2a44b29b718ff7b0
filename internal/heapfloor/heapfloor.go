// Package heapfloor sets the garbage collector of a long-running daemon
// to collect as GOGC=100 does once its heap is large, but not before the
// heap reaches a floor.
//
// With GOGC=100 a daemon whose live heap is a few MiB collects every few
// MiB it allocates: a cold find -ls through the FUSE daemon of a
// 65k-entry tree ran five collections, and each left the next allocations
// to fresh memory, a page fault per 4 KiB page (costly on a virtual
// machine), and emptied go-fuse's pools of request buffers. Below the
// floor the collector does not run and the scavenger keeps the heap's
// pages, so they can be given in huge pages once (see hugeheap).
package heapfloor

import (
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
)

// Set turns the collector's percentage off (GOGC=off) and keeps a memory
// limit of max(floor, 2 × live heap), set again after every collection:
// the heap may grow to floor before the first collection and to about
// twice what is live after it. It does nothing when GOGC or GOMEMLIMIT is
// set in the environment, and reports whether it did something.
func Set(floor int64) bool {
	if os.Getenv("GOGC") != "" || os.Getenv("GOMEMLIMIT") != "" {
		return false
	}
	t := &tuner{floor: floor, live: []metrics.Sample{{Name: "/gc/heap/live:bytes"}}}
	debug.SetMemoryLimit(floor)
	debug.SetGCPercent(-1)
	t.arm()
	return true
}

type tuner struct {
	floor int64
	live  []metrics.Sample
}

// sentinel is garbage as soon as it is made: its cleanup runs after the
// collection that finds it, sets the limit and arms the next one.
type sentinel struct{ _ *tuner }

func (t *tuner) arm() {
	runtime.AddCleanup(&sentinel{}, func(t *tuner) {
		t.adjust()
		t.arm()
	}, t)
}

// adjust sets the memory limit from the live heap the last collection
// left.
func (t *tuner) adjust() {
	metrics.Read(t.live)
	if t.live[0].Value.Kind() != metrics.KindUint64 {
		return
	}
	live := int64(min(t.live[0].Value.Uint64(), 1<<61))
	debug.SetMemoryLimit(max(t.floor, 2*live))
}
