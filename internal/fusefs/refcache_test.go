package fusefs

import (
	"slices"
	"testing"
)

// TestRefCache: values in use are never dropped (eviction and removal wait
// for the last release), eviction takes the least recently used idle half,
// and a value added twice keeps the first.
func TestRefCache(t *testing.T) {
	var dropped []int
	c := newRefCache(4, func(v int) { dropped = append(dropped, v) })
	e1 := c.add(1, 10)
	for id := uint64(2); id <= 4; id++ {
		c.release(c.add(id, int(id)*10))
	}
	if e, ok := c.get(2); !ok || e.v != 20 {
		t.Fatalf("get(2) = %v, %v", e, ok)
	} else {
		c.release(e) // 2 is now more recently used than 3 and 4
	}
	// Full: adding 5 evicts half of the idle entries (2, 3, 4), least
	// recently used first: 3 and 4. 1 is in use.
	c.release(c.add(5, 50))
	slices.Sort(dropped)
	if !slices.Equal(dropped, []int{30, 40}) {
		t.Fatalf("evicted %v, want [30 40]", dropped)
	}
	if _, ok := c.get(3); ok {
		t.Error("3 still cached")
	}
	// Same id twice: the second value is dropped, the first kept.
	dropped = nil
	if e := c.add(5, 99); e.v != 50 || !slices.Equal(dropped, []int{99}) {
		t.Fatalf("second add: %v, dropped %v", e.v, dropped)
	} else {
		c.release(e)
	}
	// Removal drops idle entries now and in-use ones at their last release.
	dropped = nil
	c.removeWhere(func(uint64) bool { return true })
	slices.Sort(dropped)
	if !slices.Equal(dropped, []int{20, 50}) {
		t.Fatalf("removed %v, want [20 50] (10 is in use)", dropped)
	}
	c.release(e1)
	if !slices.Contains(dropped, 10) {
		t.Fatal("in-use entry not dropped at its last release")
	}
	if _, ok := c.get(1); ok {
		t.Error("removed entry still cached")
	}
}
