package erofs

import (
	"runtime/debug"
	"sync"
)

// inParallel runs f(lo, hi) over [0, n) in chunks of per items, each on a
// goroutine of its own, and waits for all.
//
// The goroutines fault as the caller does: debug.SetPanicOnFault belongs to
// a goroutine, and mkcomposefs --from-file, whose tree's strings are slices
// of a mapped dump, asks for it so that a dump truncated under it ends in an
// error it recovers instead of a crash. A fault in one of these goroutines
// is raised again in the caller's once all are done (TestWriteImageFaultInWorker);
// any other panic goes on where it happened.
func inParallel(n, per int, f func(lo, hi int)) {
	onFault := debug.SetPanicOnFault(false)
	debug.SetPanicOnFault(onFault)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var fault any
	for lo := 0; lo < n; lo += per {
		wg.Go(func() {
			if onFault {
				debug.SetPanicOnFault(true)
				defer func() {
					if r := recover(); r != nil {
						if _, ok := r.(interface{ Addr() uintptr }); !ok {
							panic(r)
						}
						mu.Lock()
						if fault == nil {
							fault = r
						}
						mu.Unlock()
					}
				}()
			}
			f(lo, min(lo+per, n))
		})
	}
	wg.Wait()
	if fault != nil {
		panic(fault)
	}
}
