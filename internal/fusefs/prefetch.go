package fusefs

import (
	"os"

	"golang.org/x/sys/unix"
	"sync"
	"time"

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
// as the kernel's readahead marks a page to start the next window. While
// files are being read, a directory's listing also queues its first files
// (prefetchListed), all to be stored, newest listing first, so that a
// reader walking a tree depth first finds each directory's files ready. Only small files are
// prefetched (larger ones have the kernel's readahead), only while files
// are read (listings alone read nothing), and a failed check is not kept:
// the file's own read checks again and answers EIO.
const (
	prefetchAhead   = 64      // files after the one read
	prefetchMaxSize = 1 << 20 // larger files are left to readahead
	prefetchWorkers = 4
	prefetchQueue   = 256
	// Files queued because their directory was listed wait behind those
	// queued after a read, which a reader is waiting for sooner.
	listedQueue = 4096
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
	jobs    chan prefetchJob // after a read
	listed  jobStack         // after a listing (prefetchListed)
	pending sync.Map         // node ID → struct{}: queued or being opened
}

// prefetchAfter queues the small external files that follow nid in the
// directory it was listed in.
func (f *fileSystem) prefetchAfter(g *generation, nid uint64) {
	f.lastMiss.Store(time.Now().UnixNano())
	pos, ok := g.posOf(nid)
	if !ok {
		return
	}
	d, ok := g.dirs.Load(pos.dir)
	if !ok {
		return
	}
	f.prefetchWindow(g, d.([]Dirent), pos.idx, false)
}

// prefetchListed queues the first small files of a directory whose listing
// the kernel has just taken in whole, if files of the mount are being read
// (a read reached the daemon in the last readingWindow): a reader that
// lists and then reads, as tar or cp -r do, then finds even the first
// files of each directory in the page cache. Listings alone (find, ls -l)
// read nothing.
func (f *fileSystem) prefetchListed(g *generation, ents []Dirent) {
	if !f.noOpen || time.Now().UnixNano()-f.lastMiss.Load() > f.readingWindow.Load() {
		return
	}
	f.prefetchWindow(g, ents, -1, true)
}

// readingWindow is how long after a read that reached the daemon listings
// still prefetch (prefetchListed).
const readingWindow = 2 * time.Second

// prefetchWindow queues the small external files of a directory's entries
// ents after index idx, on the queue for listings if listed.
func (f *fileSystem) prefetchWindow(g *generation, ents []Dirent, idx int, listed bool) {
	pos := dirPos{idx: idx}
	f.pf.once.Do(func() {
		f.pf.jobs = make(chan prefetchJob, prefetchQueue)
		f.pf.listed.tokens = make(chan struct{}, listedQueue)
		for range prefetchWorkers {
			go f.prefetchWorker()
		}
	})
	// The marker is the first file queued from the middle of the window
	// on: files before it may have been queued by the window before.
	mark, marked := pos.idx+prefetchAhead/2, false
	if listed {
		// Every file is stored: a marker per directory cost a round trip
		// per directory (a cold tar of the 65k-entry tree sent 7,375
		// READs instead of 5,458). Reading mode lasts readingWindow after
		// the last read that reached the daemon; a reader that finds
		// everything in the page cache for longer meets one cold file,
		// whose read starts prefetching again.
		marked = true
	}
	var window []prefetchJob // listed: pushed at once, in order
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
		if listed {
			window = append(window, j)
			marked = marked || j.marker
			continue
		}
		select {
		case f.pf.jobs <- j:
			marked = marked || j.marker
		default:
			f.pf.pending.Delete(id)
			return // the workers are behind: do not pile up
		}
	}
	f.pf.listed.push(f, window)
}

// jobStack holds the files queued after listings, newest listing first: a
// reader that walks a tree depth first (tar, cp -r) reads the files of the
// directory it listed last before those of the directories above it.
type jobStack struct {
	mu     sync.Mutex
	jobs   []prefetchJob
	tokens chan struct{} // one per job pushed: wakes a worker
}

// push adds a directory's window, to be taken in listing order; when the
// stack is full the oldest jobs are dropped.
func (s *jobStack) push(f *fileSystem, window []prefetchJob) {
	if len(window) == 0 {
		return
	}
	s.mu.Lock()
	for i := len(window) - 1; i >= 0; i-- {
		s.jobs = append(s.jobs, window[i])
	}
	if over := len(s.jobs) - listedQueue; over > 0 {
		for _, j := range s.jobs[:over] {
			f.pf.pending.Delete(j.id)
		}
		s.jobs = append(s.jobs[:0], s.jobs[over:]...)
	}
	s.mu.Unlock()
	for range window {
		select {
		case s.tokens <- struct{}{}:
		default:
		}
	}
}

func (s *jobStack) pop() (prefetchJob, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.jobs) == 0 {
		return prefetchJob{}, false
	}
	j := s.jobs[len(s.jobs)-1]
	s.jobs = s.jobs[:len(s.jobs)-1]
	return j, true
}

// prefetchWorker takes jobs after reads first, then the newest after a
// listing, up to prefetchBatch at a time.
func (f *fileSystem) prefetchWorker() {
	batch := make([]prefetchJob, 0, prefetchBatch)
	for {
		batch = batch[:0]
		for len(batch) < prefetchBatch {
			select {
			case j := <-f.pf.jobs:
				batch = append(batch, j)
				continue
			default:
			}
			j, ok := f.pf.listed.pop()
			if !ok {
				break
			}
			batch = append(batch, j)
		}
		if len(batch) > 0 {
			f.prefetchAll(batch)
			continue
		}
		select {
		case j := <-f.pf.jobs:
			f.prefetchAll(append(batch, j))
		case <-f.pf.listed.tokens:
		}
	}
}

// prefetchBatch is how many files a worker opens at once: it asks the
// kernel to read them all (POSIX_FADV_WILLNEED) before it reads the first,
// so the disk works on them together and the reads that follow mostly
// find their pages instead of each waiting for the disk in turn (a
// blocking read also costs the Go runtime a thread switch).
const prefetchBatch = 8

// prefetchAll opens the objects of jobs, starts reading them all, and
// then prefetches them one by one.
func (f *fileSystem) prefetchAll(jobs []prefetchJob) {
	var fds [prefetchBatch]int
	var paths [prefetchBatch]string
	for i, j := range jobs {
		fds[i] = -1
		if f.skipPrefetch(j) {
			continue
		}
		fd, path, err := j.g.openPayload(j.in)
		if err != nil {
			continue // the file's own read reports it
		}
		_ = unix.Fadvise(fd, 0, int64(j.in.Size), unix.FADV_WILLNEED)
		fds[i], paths[i] = fd, path
	}
	for i, j := range jobs {
		f.prefetch(j, fds[i], paths[i])
	}
}

func (f *fileSystem) skipPrefetch(j prefetchJob) bool {
	_, done := f.stored.Load(j.id)
	return done || f.objs.has(j.id) || !f.serving(j.g)
}

// prefetch reads and checks one job's object, open at fd (-1: not open),
// and hands it to the page cache or keeps it open. It closes fd.
func (f *fileSystem) prefetch(j prefetchJob, fd int, path string) {
	defer f.pf.pending.Delete(j.id)
	defer func() { _ = recover() }() // a fault on a truncated image: the read reports it
	if fd < 0 || f.skipPrefetch(j) {
		if fd >= 0 {
			unix.Close(fd)
		}
		return
	}
	if !j.marker && j.in.Size <= wholeMax && f.server != nil {
		bp, data, err := f.readWholeFd(j.in, fd, path)
		if err != nil {
			unix.Close(fd)
			return // the file's own read checks again and reports it
		}
		ok := f.serving(j.g) && f.storeCache(j.id, 0, data)
		putWholeBuf(bp)
		if ok {
			unix.Close(fd)
			f.stored.Store(j.id, struct{}{})
			return
		}
		// The kernel did not take it (it no longer has the inode):
		// keep the object open as for a marker.
	}
	file := os.NewFile(uintptr(fd), path)
	if err := f.verifyObject(file, path, j.in); err != nil || !f.serving(j.g) {
		file.Close()
		return // the file's own read checks again and reports it
	}
	f.objs.release(f.objs.add(j.id, file))
}

// serving reports whether g is still one of the generations served.
func (f *fileSystem) serving(g *generation) bool { return f.tab.Load().byID[g.id] == g }
