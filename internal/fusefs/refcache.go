package fusefs

import (
	"cmp"
	"slices"
	"sync"
	"sync/atomic"
)

// refCache holds values by FUSE node ID with reference counts, so that a
// value in use is never closed under its user. When it holds max entries,
// adding one first drops the least recently used half of the idle ones.
// It keeps both the open objects of handle-less reads and the registered
// passthrough backing files.
type refCache[T any] struct {
	mu   sync.Mutex
	m    map[uint64]*refEntry[T]
	max  int
	drop func(T) // releases a value that leaves the cache
}

// refEntry is a cached value; the holder of a reference reads v.
type refEntry[T any] struct {
	v    T
	refs int
	used uint64
	// gone is set when the entry left the cache while in use: its value is
	// dropped at the last release.
	gone bool
}

// cacheClock orders uses for least-recently-used eviction.
var cacheClock atomic.Uint64

func newRefCache[T any](max int, drop func(T)) *refCache[T] {
	return &refCache[T]{m: map[uint64]*refEntry[T]{}, max: max, drop: drop}
}

// get returns id's entry with a reference taken, if there is one.
func (c *refCache[T]) get(id uint64) (*refEntry[T], bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.m[id]
	if e == nil {
		return nil, false
	}
	e.refs++
	e.used = cacheClock.Add(1)
	return e, true
}

// has reports whether id has an entry, without taking a reference.
func (c *refCache[T]) has(id uint64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[id] != nil
}

// add stores v for id and returns its entry with a reference taken. If
// another caller stored a value for id meanwhile, v is dropped and that
// entry is returned instead.
func (c *refCache[T]) add(id uint64, v T) *refEntry[T] {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.m[id]; e != nil {
		c.drop(v)
		e.refs++
		e.used = cacheClock.Add(1)
		return e
	}
	if len(c.m) >= c.max {
		c.evict()
	}
	e := &refEntry[T]{v: v, refs: 1, used: cacheClock.Add(1)}
	c.m[id] = e
	return e
}

// release gives back a reference taken by get or add.
func (c *refCache[T]) release(e *refEntry[T]) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e.refs--
	if e.refs == 0 && e.gone {
		c.drop(e.v)
	}
}

// removeWhere takes the entries whose node ID match accepts out of the
// cache: idle ones are dropped now, those in use at their last release.
func (c *refCache[T]) removeWhere(match func(id uint64) bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for id, e := range c.m {
		if !match(id) {
			continue
		}
		delete(c.m, id)
		if e.refs == 0 {
			c.drop(e.v)
		} else {
			e.gone = true
		}
	}
}

// evict drops the least recently used half of the idle entries. Called
// with mu held.
func (c *refCache[T]) evict() {
	type cand struct{ id, used uint64 }
	var idle []cand
	for id, e := range c.m {
		if e.refs == 0 {
			idle = append(idle, cand{id, e.used})
		}
	}
	slices.SortFunc(idle, func(a, b cand) int { return cmp.Compare(a.used, b.used) })
	for _, k := range idle[:(len(idle)+1)/2] {
		c.drop(c.m[k.id].v)
		delete(c.m, k.id)
	}
}
