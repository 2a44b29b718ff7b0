package fusefs

import (
	"sync"

	"github.com/mossfs/mossfs/tree"
)

// Prefetching of objects for handle-less reads (no-open mode).
//
// A cold read of a small file costs a round trip to the daemon, and the
// daemon then opens the object, reads it for the digest check and answers
// from it: the kernel waits for all of it. Readers that go through a
// directory (tar, cp -r, a package manager checking files) read its files
// one after the other in listing order, so the first read of a file starts
// reading and checking the next files of its directory in the background,
// a few at a time, and hands each checked file whole to the kernel's page
// cache (see whole.go): the reader then finds them there without asking
// the daemon, and the disk works on several objects at once instead of
// one. One file in the middle of the window is only opened and checked,
// not stored: its read reaches the daemon cheaply and moves the window on,
// as the kernel's readahead marks a page to start the next window. Only
// small files are prefetched (larger ones have the kernel's readahead),
// only after a read (listing a directory reads nothing), and a failed
// check is not kept: the file's own read checks again and answers EIO.
const (
	prefetchAhead   = 32      // files after the one read
	prefetchMaxSize = 1 << 20 // larger files are left to readahead
	prefetchWorkers = 4
	prefetchQueue   = 256
)

// dirPos is where readDir listed a file: its directory and index there.
type dirPos struct {
	dir uint64
	idx int
}

type prefetchJob struct {
	g  *generation
	in *Inode
	id uint64 // FUSE node ID
	// marker is opened and checked but not stored: its read comes to the
	// daemon and prefetches the window after it.
	marker bool
}

type prefetcher struct {
	once    sync.Once
	jobs    chan prefetchJob
	pending sync.Map // node ID → struct{}: queued or being opened
}

// prefetchAfter queues the small external files that follow nid in the
// directory it was listed in.
func (f *fileSystem) prefetchAfter(g *generation, nid uint64) {
	v, ok := g.pos.Load(nid)
	if !ok {
		return
	}
	pos := v.(dirPos)
	d, ok := g.dirs.Load(pos.dir)
	if !ok {
		return
	}
	ents := d.([]Dirent)
	f.pf.once.Do(func() {
		f.pf.jobs = make(chan prefetchJob, prefetchQueue)
		for range prefetchWorkers {
			go f.prefetchWorker()
		}
	})
	// The marker is the first file queued from the middle of the window
	// on: files before it may have been queued by the window before.
	mark, marked := pos.idx+prefetchAhead/2, false
	for i := pos.idx + 1; i < len(ents) && i <= pos.idx+prefetchAhead; i++ {
		e := ents[i]
		if e.Type != tree.TypeReg {
			continue
		}
		id := nodeID(g, e.Nid)
		if f.objs.has(id) {
			continue
		}
		if _, done := f.stored.Load(id); done {
			continue
		}
		if _, busy := f.pf.pending.LoadOrStore(id, struct{}{}); busy {
			continue
		}
		in, err := g.src.Inode(e.Nid)
		if err != nil || in.HasInline || in.Size == 0 || in.Size > prefetchMaxSize || in.Payload == "" {
			f.pf.pending.Delete(id)
			continue
		}
		j := prefetchJob{g: g, in: in, id: id, marker: i >= mark && !marked}
		select {
		case f.pf.jobs <- j:
			marked = marked || j.marker
		default:
			f.pf.pending.Delete(id)
			return // the workers are behind: do not pile up
		}
	}
}

func (f *fileSystem) prefetchWorker() {
	for j := range f.pf.jobs {
		f.prefetch(j)
	}
}

func (f *fileSystem) prefetch(j prefetchJob) {
	defer f.pf.pending.Delete(j.id)
	defer func() { _ = recover() }() // a fault on a truncated image: the read reports it
	if _, done := f.stored.Load(j.id); done || f.objs.has(j.id) || !f.serving(j.g) {
		return
	}
	if !j.marker && j.in.Size <= wholeMax && f.server != nil {
		bp, data, err := f.readWhole(j.g, j.in)
		if err != nil {
			return // the file's own read checks again and reports it
		}
		ok := f.serving(j.g) && f.storeCache(j.id, 0, data)
		putWholeBuf(bp)
		if ok {
			f.stored.Store(j.id, struct{}{})
			return
		}
		// The kernel did not take it (it no longer has the inode):
		// keep the object open as for a marker.
	}
	file, err := f.openObject(j.g, j.in)
	if err != nil {
		return // the file's own read checks again and reports it
	}
	if !f.serving(j.g) {
		file.Close()
		return
	}
	f.objs.release(f.objs.add(j.id, file))
}

// serving reports whether g is still one of the generations served.
func (f *fileSystem) serving(g *generation) bool { return f.tab.Load().byID[g.id] == g }
