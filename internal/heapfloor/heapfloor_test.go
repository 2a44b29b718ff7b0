package heapfloor

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"testing"
	"time"
)

var sink [][]byte

func gcCycles() uint64 {
	s := []metrics.Sample{{Name: "/gc/cycles/total:gc-cycles"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// TestFloorThenTwiceLive: below the floor nothing is collected; once a
// collection finds more than half the floor live, the limit follows the
// live heap (about what GOGC=100 allows).
func TestFloorThenTwiceLive(t *testing.T) {
	t.Setenv("GOGC", "")
	t.Setenv("GOMEMLIMIT", "")
	oldPercent, oldLimit := debug.SetGCPercent(100), debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetGCPercent(oldPercent); debug.SetMemoryLimit(oldLimit) })
	runtime.GC()

	const floor = 64 << 20
	if !Set(floor) {
		t.Fatal("Set did nothing")
	}
	if p := debug.SetGCPercent(-1); p != -1 {
		t.Errorf("GC percent %d, want off", p)
	}
	before := gcCycles()
	// 16 MiB of garbage in 4 KiB pieces: GOGC=100 would have collected
	// several times (its smallest heap goal is 4 MiB).
	for range 4096 {
		sink = append(sink, make([]byte, 4096))
		if len(sink) > 16 {
			sink = sink[:0]
		}
	}
	if n := gcCycles() - before; n != 0 {
		t.Errorf("%d collections below the floor", n)
	}

	// 48 MiB live, then garbage until a collection ran: the limit must
	// become about twice the live heap.
	var live [][]byte
	for range 48 {
		live = append(live, make([]byte, 1<<20))
	}
	before = gcCycles()
	for gcCycles() == before {
		sink = append(sink[:0], make([]byte, 1<<20))
	}
	deadline := time.Now().Add(5 * time.Second)
	for debug.SetMemoryLimit(-1) < 2*48<<20 {
		if time.Now().After(deadline) {
			t.Fatalf("memory limit %d MiB after a collection with 48 MiB live, want at least 96 MiB", debug.SetMemoryLimit(-1)>>20)
		}
		time.Sleep(time.Millisecond)
	}
	runtime.KeepAlive(live)
}

// TestEnvironmentWins: GOGC in the environment leaves the collector alone.
func TestEnvironmentWins(t *testing.T) {
	t.Setenv("GOGC", "200")
	if Set(64 << 20) {
		t.Error("Set changed the collector although GOGC is set")
	}
}
