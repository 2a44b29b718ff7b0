package fusefs

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/mossfs/mossfs/tree"
	"golang.org/x/sys/unix"
)

// cacheTimeout is how long the kernel may cache entries and attributes. An
// image never changes, so answers stay true for the life of the mount; a
// switch invalidates what it replaces explicitly.
const cacheTimeout = 365 * 24 * time.Hour

// Node IDs: the root of the current generation is fuse.FUSE_ROOT_ID (1);
// every other inode is genShift bits of generation over nid+2, so a switch
// gives every inode of the new tree new node IDs and the kernel never mixes
// inodes of two trees.
const (
	genShift = 40
	nidMask  = 1<<genShift - 1
	maxNid   = nidMask - 2
)

// generation is one tree served by the file system: the first image, or one
// that a rootless switch put in its place.
type generation struct {
	id      uint64
	src     Source
	closer  io.Closer // closes src; nil if nothing to close
	image   string    // image path, for status and errors
	objects string    // object directory
	blocks  uint64    // statfs: image size in 4 KiB blocks

	dirs sync.Map // nid → []Dirent, hidden entries removed
	// pos maps the nid of a regular file to where it was first listed
	// (prefetch). listed holds the nids of the directories listed, in
	// order, the first indexed of them in pos: posOf indexes the rest
	// when a read needs it, so that a listing alone (find -ls) costs
	// nothing here.
	posM    sync.Mutex
	pos     map[uint64]dirPos
	listed  []uint64
	indexed int

	// objDirOnce opens objDir, the object directory, once: objects are
	// opened relative to it (openat), without walking its path again.
	// It is never closed explicitly (a prefetch may still use it after a
	// switch); the runtime closes it when the generation is gone. nil if
	// it could not be opened: objects are then opened by full path.
	objDirOnce sync.Once
	objDir     *os.File

	// refs counts what the kernel still holds of this generation: lookups
	// not yet forgotten and open files. An old generation is closed when it
	// drops to zero.
	refs atomic.Int64
}

// table is an immutable snapshot of the generations being served.
type table struct {
	cur  *generation
	byID map[uint64]*generation
}

// fileSystem implements fuse.RawFileSystem over Sources. It is read-only:
// every modifying operation is answered by the embedded default with ENOSYS
// (the mount is read-only, so the kernel answers EROFS before asking).
type fileSystem struct {
	fuse.RawFileSystem

	opts   Options
	logger *log.Logger
	server *fuse.Server

	tab     atomic.Pointer[table]
	switchM sync.Mutex // serializes switches and releases
	nextGen uint64

	verified sync.Map // verifyKey → *verifyEntry
	panics   atomic.Int64

	handlesM sync.Mutex
	handles  map[uint64]*handle
	nextFh   uint64

	// passthrough is set while FUSE passthrough is in use; it is cleared
	// for good when the kernel refuses to register a backing file.
	passthrough atomic.Bool
	backing     *refCache[backingFile] // node ID → registered backing file
	// connGone is set once the FUSE connection is closed: the kernel has
	// dropped its backing registrations with it.
	connGone atomic.Bool

	// noOpen is set when passthrough is off: OPEN is answered with ENOSYS,
	// after which the kernel opens files without asking (no round trip per
	// open) and keeps their page cache; reads then arrive without a handle
	// and are served from objs.
	noOpen bool
	objs   *refCache[*os.File] // node ID → open, checked object
	pf     prefetcher

	// noOpenDir is set where the kernel supports it: OPENDIR is answered
	// with ENOSYS, after which the kernel opens directories without asking
	// and releases them without telling (a round trip fewer per directory
	// walked), and caches their listings as FOPEN_CACHE_DIR|KEEP_CACHE
	// did.
	noOpenDir bool
	// dirReads counts READDIR(PLUS) requests (tests: listings are cached).
	dirReads atomic.Int64
	// linkReads counts READLINK requests (tests: targets are cached).
	linkReads atomic.Int64
	// cacheLinks is set when the kernel keeps symlink targets in their
	// page cache (FUSE_CACHE_SYMLINKS, asked for at mount).
	cacheLinks bool
	// reads counts handle-less READ requests of external files, stores
	// the content the kernel took into its page cache unasked, counted once
	// it has it (tests).
	reads, stores atomic.Int64
	// lastMiss is when (UnixNano) a read last reached the daemon.
	lastMiss atomic.Int64
	// readingWindow (ns) is readingWindow unless a test sets it: a test of
	// what a listing does while files are read cannot bound the time
	// between its read and its listing on a loaded machine.
	readingWindow atomic.Int64
	// stored holds the node IDs whose whole content the prefetcher handed
	// to the page cache.
	stored sync.Map
}

// maxObjFiles bounds the objects kept open for handle-less reads.
const maxObjFiles = 1024

// handle is one open regular file.
type handle struct {
	gen    *generation
	nid    uint64
	nodeID uint64
	file   *os.File // external content; nil for inline or empty files
	inline bool
	// backing is the registered backing file of a passthrough open.
	backing *refEntry[backingFile]
}

// backingFile is an object registered with the kernel as a passthrough
// backing file.
type backingFile struct {
	id   int32
	file *os.File
}

var _ fuse.RawFileSystem = (*fileSystem)(nil)

func newFileSystem(opts Options, g *generation) *fileSystem {
	f := &fileSystem{
		RawFileSystem: fuse.NewDefaultRawFileSystem(),
		opts:          opts,
		logger:        opts.Logger,
		handles:       map[uint64]*handle{},
	}
	f.readingWindow.Store(int64(readingWindow))
	f.objs = newRefCache(maxObjFiles, func(file *os.File) { file.Close() })
	f.backing = newRefCache(maxBacking, f.unregisterBacking)
	if f.logger == nil {
		f.logger = log.New(os.Stderr, "mossfs: ", 0)
	}
	g.id = 0
	f.nextGen = 1
	f.tab.Store(&table{cur: g, byID: map[uint64]*generation{0: g}})
	return f
}

func (f *fileSystem) String() string { return "mossfs" }

func (f *fileSystem) Init(s *fuse.Server) {
	f.server = s
	if f.opts.Passthrough && os.Geteuid() == 0 && s.KernelSettings().Flags64()&fuse.CAP_PASSTHROUGH != 0 {
		f.passthrough.Store(true)
	} else if s.KernelSettings().Flags64()&fuse.CAP_NO_OPEN_SUPPORT != 0 {
		f.noOpen = true
	}
	f.noOpenDir = s.KernelSettings().Flags64()&fuse.CAP_NO_OPENDIR_SUPPORT != 0
	f.cacheLinks = s.KernelSettings().Flags64()&fuse.CAP_CACHE_SYMLINKS != 0
}

// guard turns a panic in a request (a reader bug on a hostile image, or a
// fault on a memory-mapped image that was truncated) into EIO, so that one
// bad request never takes the daemon and its mount down.
func (f *fileSystem) guard(st *fuse.Status) {
	if r := recover(); r != nil {
		// The first stack is worth reading; a truncated image faults on
		// every request, so later ones are only counted in the message.
		if n := f.panics.Add(1); n == 1 {
			f.logger.Printf("internal error (answering EIO): %v\n%s", r, debug.Stack())
		} else if n&(n-1) == 0 {
			f.logger.Printf("internal error (answering EIO, %d so far): %v", n, r)
		}
		*st = fuse.EIO
	}
}

// node resolves a node ID to its generation and nid.
func (f *fileSystem) node(id uint64) (*generation, uint64, fuse.Status) {
	// Images are memory-mapped: a fault (the file was truncated under us)
	// must become a panic that guard answers with EIO, not a crash.
	debug.SetPanicOnFault(true)
	t := f.tab.Load()
	if id == fuse.FUSE_ROOT_ID {
		return t.cur, t.cur.src.RootNid(), fuse.OK
	}
	g := t.byID[id>>genShift]
	low := id & nidMask
	if g == nil || low < 2 {
		return nil, 0, fuse.Status(syscall.ESTALE)
	}
	return g, low - 2, fuse.OK
}

// inodeOf resolves a node ID to its generation, nid and inode.
func (f *fileSystem) inodeOf(id uint64) (*generation, uint64, *Inode, fuse.Status) {
	g, nid, st := f.node(id)
	if !st.Ok() {
		return nil, 0, nil, st
	}
	in, st := g.inode(f, nid)
	return g, nid, in, st
}

// dirOf resolves a directory's node ID to its generation, nid and entries.
func (f *fileSystem) dirOf(id uint64) (*generation, uint64, []Dirent, fuse.Status) {
	g, nid, st := f.node(id)
	if !st.Ok() {
		return nil, 0, nil, st
	}
	ents, st := g.readDir(f, nid)
	return g, nid, ents, st
}

func nodeID(g *generation, nid uint64) uint64 { return g.id<<genShift | (nid + 2) }

// inode loads an inode, logging what is wrong with the image.
func (g *generation) inode(f *fileSystem, nid uint64) (*Inode, fuse.Status) {
	if nid > maxNid {
		f.logger.Printf("%s: nid %d out of range", g.image, nid)
		return nil, fuse.EIO
	}
	in, err := g.src.Inode(nid)
	if err != nil {
		f.logger.Printf("%s: inode %d: %v", g.image, nid, err)
		return nil, fuse.EIO
	}
	return in, fuse.OK
}

// attr loads what stat shows of an inode, logging what is wrong with the
// image.
func (g *generation) attr(f *fileSystem, nid uint64) (Attr, fuse.Status) {
	if nid > maxNid {
		f.logger.Printf("%s: nid %d out of range", g.image, nid)
		return Attr{}, fuse.EIO
	}
	a, err := g.src.Attr(nid)
	if err != nil {
		f.logger.Printf("%s: inode %d: %v", g.image, nid, err)
		return Attr{}, fuse.EIO
	}
	return a, fuse.OK
}

// readDir returns a directory's entries as the overlay shows them, cached.
func (g *generation) readDir(f *fileSystem, nid uint64) ([]Dirent, fuse.Status) {
	if v, ok := g.dirs.Load(nid); ok {
		return v.([]Dirent), fuse.OK
	}
	ents, err := g.src.ReadDir(nid)
	if err != nil {
		f.logger.Printf("%s: directory %d: %v", g.image, nid, err)
		return nil, fuse.EIO
	}
	// The source's slice is kept as it is unless entries are dropped or
	// it needs sorting (it may be the source's own: never changed in
	// place).
	out := ents
	for i, e := range ents {
		if !g.hidden(e) {
			if len(out) < len(ents) {
				out = append(out, e)
			}
			continue
		}
		if len(out) == len(ents) {
			out = append(make([]Dirent, 0, len(ents)), ents[:i]...)
		}
	}
	// Lookups search by name: keep byte order even if the source did not.
	if !slices.IsSortedFunc(out, func(a, b Dirent) int { return strings.Compare(a.Name, b.Name) }) {
		out = slices.Clone(out)
		slices.SortFunc(out, func(a, b Dirent) int { return strings.Compare(a.Name, b.Name) })
	}
	v, loaded := g.dirs.LoadOrStore(nid, out)
	if !loaded {
		// Where files were listed is indexed when a read needs it
		// (prefetchAfter): a listing alone costs the prefetcher nothing.
		g.posM.Lock()
		g.listed = append(g.listed, nid)
		g.posM.Unlock()
	}
	return v.([]Dirent), fuse.OK
}

// hidden reports a directory entry the overlay does not show: a bad name,
// or a char device 0:0, an overlay whiteout (the root stubs among them).
func (g *generation) hidden(e Dirent) bool {
	if e.Name == "" || e.Name == "." || e.Name == ".." || strings.ContainsRune(e.Name, '/') {
		return true
	}
	if e.Type == tree.TypeChar {
		a, err := g.src.Attr(e.Nid)
		return err == nil && a.Rdev == 0 && a.Mode&tree.TypeMask == tree.TypeChar
	}
	return false
}

// posOf returns where a regular file was first listed, indexing the
// listings made since the last call.
func (g *generation) posOf(nid uint64) (dirPos, bool) {
	g.posM.Lock()
	defer g.posM.Unlock()
	for ; g.indexed < len(g.listed); g.indexed++ {
		dir := g.listed[g.indexed]
		v, ok := g.dirs.Load(dir)
		if !ok {
			continue
		}
		if g.pos == nil {
			g.pos = map[uint64]dirPos{}
		}
		for i, e := range v.([]Dirent) {
			if e.Type == tree.TypeReg {
				if _, ok := g.pos[e.Nid]; !ok {
					g.pos[e.Nid] = dirPos{dir: dir, idx: i}
				}
			}
		}
	}
	p, ok := g.pos[nid]
	return p, ok
}

// openObjectFd opens the object at the local path p (relative to the
// object directory) read-only, not following a symlink at the end, and
// returns its descriptor and full path.
func (g *generation) openObjectFd(p string, flags int) (int, string, error) {
	path := filepath.Join(g.objects, p)
	g.objDirOnce.Do(func() {
		fd, err := unix.Open(g.objects, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err == nil {
			g.objDir = os.NewFile(uintptr(fd), g.objects)
		}
	})
	flags |= unix.O_RDONLY | unix.O_NOFOLLOW | unix.O_CLOEXEC
	var fd int
	var err error
	if g.objDir != nil {
		fd, err = unix.Openat(int(g.objDir.Fd()), p, flags, 0)
		runtime.KeepAlive(g.objDir)
	} else {
		fd, err = unix.Open(path, flags, 0)
	}
	if err != nil {
		return -1, path, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	return fd, path, nil
}

func fillAttr(in *Attr, a *fuse.Attr) {
	a.Ino = in.Nid
	a.Size = in.Size
	if in.Mode&tree.TypeMask == tree.TypeDir || in.Mode&tree.TypeMask == tree.TypeReg || in.Mode&tree.TypeMask == tree.TypeLink {
		a.Blocks = (in.Size + 4095) / 4096 * 8
	}
	sec := uint64(in.Mtime.Sec)
	a.Atime, a.Mtime, a.Ctime = sec, sec, sec
	a.Atimensec, a.Mtimensec, a.Ctimensec = in.Mtime.Nsec, in.Mtime.Nsec, in.Mtime.Nsec
	a.Mode = in.Mode
	a.Nlink = in.Nlink
	a.Uid, a.Gid = in.UID, in.GID
	a.Rdev = in.Rdev
	a.Blksize = 4096
}

func (f *fileSystem) fillEntry(g *generation, in *Attr, out *fuse.EntryOut) {
	out.NodeId = nodeID(g, in.Nid)
	out.Generation = 0
	out.SetEntryTimeout(cacheTimeout)
	out.SetAttrTimeout(cacheTimeout)
	fillAttr(in, &out.Attr)
	g.refs.Add(1)
}

// dataless reports an external regular file without an object path: a
// metacopy file whose data the overlay cannot find.
func dataless(in *Attr) bool {
	return in.Mode&tree.TypeMask == tree.TypeReg && in.Size > 0 && !in.HasInline && !in.HasPayload
}

func findDirent(ents []Dirent, name string) (Dirent, bool) {
	i, ok := slices.BinarySearchFunc(ents, name, func(e Dirent, s string) int { return strings.Compare(e.Name, s) })
	if !ok {
		return Dirent{}, false
	}
	return ents[i], true
}

func (f *fileSystem) Lookup(cancel <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) (st fuse.Status) {
	defer f.guard(&st)
	g, _, ents, st := f.dirOf(h.NodeId)
	if !st.Ok() {
		return st
	}
	e, ok := findDirent(ents, name)
	if !ok {
		if h.NodeId == fuse.FUSE_ROOT_ID {
			// Not cached: a switch changes the root's names, and the kernel
			// offers no way to drop negative entries we do not know of.
			return fuse.ENOENT
		}
		out.NodeId = 0
		out.SetEntryTimeout(cacheTimeout)
		return fuse.OK
	}
	in, st := g.attr(f, e.Nid)
	if !st.Ok() {
		return st
	}
	if in.Nid != e.Nid {
		f.logger.Printf("%s: inode %d says it is %d", g.image, e.Nid, in.Nid)
		return fuse.EIO
	}
	if dataless(&in) {
		// The overlay refuses the lookup of a metacopy file that has no
		// redirect ("metacopy with no lower data found").
		return fuse.EIO
	}
	f.fillEntry(g, &in, out)
	return fuse.OK
}

func (f *fileSystem) Forget(id, nlookup uint64) {
	if id == fuse.FUSE_ROOT_ID {
		return
	}
	g := f.tab.Load().byID[id>>genShift]
	if g == nil {
		return
	}
	if g.refs.Add(-int64(nlookup)) <= 0 {
		f.maybeRelease(g)
	}
}

func (f *fileSystem) GetAttr(cancel <-chan struct{}, input *fuse.GetAttrIn, out *fuse.AttrOut) (st fuse.Status) {
	defer f.guard(&st)
	g, nid, st := f.node(input.NodeId)
	if !st.Ok() {
		return st
	}
	in, st := g.attr(f, nid)
	if !st.Ok() {
		return st
	}
	fillAttr(&in, &out.Attr)
	out.SetTimeout(cacheTimeout)
	return fuse.OK
}

func (f *fileSystem) Readlink(cancel <-chan struct{}, h *fuse.InHeader) (b []byte, st fuse.Status) {
	defer f.guard(&st)
	f.linkReads.Add(1)
	_, _, in, st := f.inodeOf(h.NodeId)
	if !st.Ok() {
		return nil, st
	}
	if in.Mode&tree.TypeMask != tree.TypeLink {
		return nil, fuse.EINVAL
	}
	return []byte(in.Target), fuse.OK
}

func (f *fileSystem) xattrs(h *fuse.InHeader) ([]tree.Xattr, fuse.Status) {
	_, _, in, st := f.inodeOf(h.NodeId)
	if !st.Ok() {
		return nil, st
	}
	return in.Xattrs, fuse.OK
}

func (f *fileSystem) GetXAttr(cancel <-chan struct{}, h *fuse.InHeader, attr string, dest []byte) (sz uint32, st fuse.Status) {
	defer f.guard(&st)
	xs, st := f.xattrs(h)
	if !st.Ok() {
		return 0, st
	}
	i, ok := slices.BinarySearchFunc(xs, attr, func(x tree.Xattr, s string) int { return strings.Compare(x.Name, s) })
	if !ok {
		// Also accept an unsorted list from a lenient source.
		i = slices.IndexFunc(xs, func(x tree.Xattr) bool { return x.Name == attr })
		if i < 0 {
			return 0, fuse.ENOATTR
		}
	}
	v := xs[i].Value
	if len(dest) < len(v) {
		return uint32(len(v)), fuse.ERANGE
	}
	return uint32(copy(dest, v)), fuse.OK
}

func (f *fileSystem) ListXAttr(cancel <-chan struct{}, h *fuse.InHeader, dest []byte) (sz uint32, st fuse.Status) {
	defer f.guard(&st)
	xs, st := f.xattrs(h)
	if !st.Ok() {
		return 0, st
	}
	var b []byte
	for _, x := range xs {
		// The overlay lists trusted.* only to CAP_SYS_ADMIN; FUSE cannot see
		// capabilities, so root stands in for it.
		if strings.HasPrefix(x.Name, "trusted.") && h.Caller.Uid != 0 {
			continue
		}
		b = append(b, x.Name...)
		b = append(b, 0)
	}
	if len(dest) < len(b) {
		return uint32(len(b)), fuse.ERANGE
	}
	return uint32(copy(dest, b)), fuse.OK
}

func (f *fileSystem) StatFs(cancel <-chan struct{}, h *fuse.InHeader, out *fuse.StatfsOut) fuse.Status {
	g := f.tab.Load().cur
	out.Blocks = g.blocks
	out.Bsize = 4096
	out.Frsize = 4096
	out.NameLen = 255
	return fuse.OK
}

func (f *fileSystem) OpenDir(cancel <-chan struct{}, input *fuse.OpenIn, out *fuse.OpenOut) (st fuse.Status) {
	defer f.guard(&st)
	if f.noOpenDir {
		return fuse.ENOSYS
	}
	g, nid, st := f.node(input.NodeId)
	if !st.Ok() {
		return st
	}
	if _, st := g.readDir(f, nid); !st.Ok() {
		return st
	}
	// Directory contents never change under a node ID; the root's cache is
	// dropped by a switch (inode invalidation).
	out.OpenFlags = fuse.FOPEN_CACHE_DIR | fuse.FOPEN_KEEP_CACHE
	return fuse.OK
}

func (f *fileSystem) ReleaseDir(input *fuse.ReleaseIn) {}

func (f *fileSystem) ReadDir(cancel <-chan struct{}, input *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	return f.readDir(input, out, false)
}

func (f *fileSystem) ReadDirPlus(cancel <-chan struct{}, input *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	return f.readDir(input, out, true)
}

// readDir lists "." and ".." at offsets 0 and 1, then the entries; an
// entry's Off is the offset of the one after it.
func (f *fileSystem) readDir(input *fuse.ReadIn, out *fuse.DirEntryList, plus bool) (st fuse.Status) {
	defer f.guard(&st)
	f.dirReads.Add(1)
	g, nid, ents, st := f.dirOf(input.NodeId)
	if !st.Ok() {
		return st
	}
	if plus && input.Offset >= uint64(len(ents))+2 {
		// The end of a listing: the kernel has the entries' inodes now,
		// so what is prefetched can go to their page cache.
		f.prefetchListed(g, ents)
	}
	for off := input.Offset; off < uint64(len(ents))+2; off++ {
		de := fuse.DirEntry{Off: off + 1, Mode: tree.TypeDir}
		var e Dirent
		switch off {
		case 0:
			de.Name, de.Ino = ".", nid
		case 1:
			de.Name = ".."
		default:
			e = ents[off-2]
			de.Name, de.Ino, de.Mode = e.Name, e.Nid, e.Type
		}
		if !plus {
			if !out.AddDirEntry(de) {
				break
			}
			continue
		}
		eo := out.AddDirLookupEntry(de)
		if eo == nil {
			break
		}
		if off < 2 {
			continue // the kernel never instantiates . and ..
		}
		in, st := g.attr(f, e.Nid)
		if !st.Ok() || in.Nid != e.Nid || in.Mode&tree.TypeMask != e.Type || dataless(&in) {
			// Leave NodeId 0: the kernel looks the name up itself, and
			// the lookup reports the error.
			continue
		}
		f.fillEntry(g, &in, eo)
	}
	return fuse.OK
}

func (f *fileSystem) Open(cancel <-chan struct{}, input *fuse.OpenIn, out *fuse.OpenOut) (st fuse.Status) {
	defer f.guard(&st)
	if f.noOpen {
		return fuse.ENOSYS
	}
	if input.Flags&syscall.O_ACCMODE != syscall.O_RDONLY {
		return fuse.Status(syscall.EROFS)
	}
	g, nid, in, st := f.inodeOf(input.NodeId)
	if !st.Ok() {
		return st
	}
	if in.Mode&tree.TypeMask != tree.TypeReg {
		return fuse.EINVAL
	}
	h := &handle{gen: g, nid: nid, nodeID: input.NodeId}
	switch {
	case in.HasInline:
		h.inline = true
	case in.Size == 0:
	case in.Payload == "":
		// A metacopy file without a redirect: the overlay finds no data.
		f.logger.Printf("%s: inode %d has %d bytes of content but no object path", g.image, nid, in.Size)
		return fuse.EIO
	default:
		if f.passthrough.Load() {
			b, st := f.acquireBacking(g, in, input.NodeId)
			if !st.Ok() {
				return st
			}
			if b != nil {
				h.backing = b
				out.BackingID = b.v.id
				out.OpenFlags = fuse.FOPEN_PASSTHROUGH | fuse.FOPEN_NOFLUSH
				break
			}
		}
		file, st := f.openObjectStatus(g, in)
		if !st.Ok() {
			return st
		}
		h.file = file
	}
	if h.backing == nil {
		out.OpenFlags = fuse.FOPEN_KEEP_CACHE | fuse.FOPEN_NOFLUSH
	}
	g.refs.Add(1)
	f.handlesM.Lock()
	f.nextFh++
	out.Fh = f.nextFh
	f.handles[out.Fh] = h
	f.handlesM.Unlock()
	return fuse.OK
}

// openObjectStatus is openObject with the error logged and turned into the
// answer the overlay gives: ENOENT for a missing object, EIO otherwise (a
// digest mismatch above all).
func (f *fileSystem) openObjectStatus(g *generation, in *Inode) (*os.File, fuse.Status) {
	file, err := f.openObject(g, in)
	if err != nil {
		return nil, f.objectErrorStatus(err)
	}
	return file, fuse.OK
}

// openObject opens the object behind an external file and checks it
// against the image's digest before its first use.
func (f *fileSystem) openObject(g *generation, in *Inode) (*os.File, error) {
	p := in.Payload
	if !filepath.IsLocal(p) {
		return nil, fmt.Errorf("%s: inode %d: object path %q leaves the object directory", g.image, in.Nid, p)
	}
	fd, path, err := g.openObjectFd(p, 0)
	if err != nil {
		return nil, fmt.Errorf("%s: inode %d: %w", g.image, in.Nid, err)
	}
	file := os.NewFile(uintptr(fd), path)
	if err := f.verifyObject(file, path, in); err != nil {
		file.Close()
		return nil, err
	}
	return file, nil
}

// verifyObject checks an open object against the image's digest, unless
// checks are off or the image records none.
func (f *fileSystem) verifyObject(file *os.File, path string, in *Inode) error {
	if f.opts.NoVerify || in.Digest == nil {
		return nil
	}
	return f.verify(file, path, in)
}

// acquireBacking returns the backing file registered for a node, opening,
// checking and registering its object on first use. The kernel allows one
// backing file per inode, and registrations are kept across opens (up to
// maxBacking idle ones), so a warm open costs one round trip and no I/O. It
// returns nil (and turns passthrough off) when the kernel refuses.
func (f *fileSystem) acquireBacking(g *generation, in *Inode, id uint64) (*refEntry[backingFile], fuse.Status) {
	if b, ok := f.backing.get(id); ok {
		return b, fuse.OK
	}
	file, st := f.openObjectStatus(g, in)
	if !st.Ok() {
		return nil, st
	}
	bid, errno := f.server.RegisterBackingFd(&fuse.BackingMap{Fd: int32(file.Fd())})
	if errno != 0 {
		file.Close()
		if f.passthrough.Swap(false) {
			f.logger.Printf("FUSE passthrough unavailable (%v): serving reads through the daemon", errno)
		}
		return nil, fuse.OK
	}
	return f.backing.add(id, backingFile{id: bid, file: file}), fuse.OK
}

// maxBacking bounds the backing files kept registered.
const maxBacking = 4096

// unregisterBacking ends a backing file's registration (unless the
// connection, and with it every registration, is gone) and closes it.
func (f *fileSystem) unregisterBacking(b backingFile) {
	if !f.connGone.Load() {
		if errno := f.server.UnregisterBackingFd(b.id); errno != 0 {
			f.logger.Printf("releasing backing file %d: %v", b.id, errno)
		}
	}
	b.file.Close()
}

func (f *fileSystem) Read(cancel <-chan struct{}, input *fuse.ReadIn, buf []byte) (r fuse.ReadResult, st fuse.Status) {
	defer f.guard(&st)
	if input.Fh == 0 {
		return f.readNoOpen(input, buf)
	}
	f.handlesM.Lock()
	h := f.handles[input.Fh]
	f.handlesM.Unlock()
	if h == nil {
		return nil, fuse.EBADF
	}
	switch {
	case h.file != nil:
		return fuse.ReadResultFd(h.file.Fd(), int64(input.Offset), int(input.Size)), fuse.OK
	case h.backing != nil:
		// Passthrough reads never get here; mmap or a kernel that
		// bypassed passthrough might.
		return fuse.ReadResultFd(h.backing.v.file.Fd(), int64(input.Offset), int(input.Size)), fuse.OK
	case h.inline:
		n, err := h.gen.src.ReadAt(h.nid, buf[:min(len(buf), int(input.Size))], int64(input.Offset))
		if err != nil && err != io.EOF {
			f.logger.Printf("%s: inode %d: %v", h.gen.image, h.nid, err)
			return nil, fuse.EIO
		}
		return readResultBytes(buf[:n]), fuse.OK
	}
	return fuse.ReadResultData(nil), fuse.OK
}

func (f *fileSystem) Release(cancel <-chan struct{}, input *fuse.ReleaseIn) {
	f.handlesM.Lock()
	h := f.handles[input.Fh]
	delete(f.handles, input.Fh)
	f.handlesM.Unlock()
	if h == nil {
		return
	}
	if h.backing != nil {
		f.backing.release(h.backing)
	}
	if h.file != nil {
		h.file.Close()
	}
	if h.gen.refs.Add(-1) <= 0 {
		f.maybeRelease(h.gen)
	}
}

// Flush is not needed on a read-only file system: ENOSYS makes the kernel
// stop sending it.
func (f *fileSystem) Flush(cancel <-chan struct{}, input *fuse.FlushIn) fuse.Status {
	return fuse.ENOSYS
}

// readNoOpen serves a read that comes without a handle (see noOpen).
func (f *fileSystem) readNoOpen(input *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	g, nid, in, st := f.inodeOf(input.NodeId)
	if !st.Ok() {
		return nil, st
	}
	buf = buf[:min(len(buf), int(input.Size))]
	switch {
	case in.Mode&tree.TypeMask != tree.TypeReg:
		return nil, fuse.EINVAL
	case in.HasInline:
		n, err := g.src.ReadAt(nid, buf, int64(input.Offset))
		if err != nil && err != io.EOF {
			f.logger.Printf("%s: inode %d: %v", g.image, nid, err)
			return nil, fuse.EIO
		}
		return readResultBytes(buf[:n]), fuse.OK
	case in.Size == 0:
		return fuse.ReadResultData(nil), fuse.OK
	case in.Payload == "":
		return nil, fuse.EIO
	}
	f.reads.Add(1)
	id := input.NodeId
	if in.Size <= wholeMax && f.server != nil && !f.objs.has(id) {
		// Read once, check, answer from the same bytes, store the rest.
		f.prefetchAfter(g, nid)
		bp, data, err := f.readWhole(g, in)
		if err != nil {
			return nil, f.objectErrorStatus(err)
		}
		// The answer and the store after it put the whole file in the
		// page cache: a prefetch of it queued meanwhile has nothing to
		// do.
		f.stored.Store(id, struct{}{})
		from := min(int(input.Offset), len(data))
		to := min(from+len(buf), len(data))
		return &wholeResult{f: f, id: id, bp: bp, data: data, from: from, to: to}, fuse.OK
	}
	o, st := f.acquireObject(g, in, id)
	if !st.Ok() {
		return nil, st
	}
	defer f.objs.release(o)
	n, err := o.v.ReadAt(buf, int64(input.Offset))
	if err != nil && err != io.EOF {
		f.logger.Printf("%s: inode %d: reading %s: %v", g.image, nid, in.Payload, err)
		return nil, fuse.EIO
	}
	return readResultBytes(buf[:n]), fuse.OK
}

// readResultBytes answers a read with bytes, written with writev (go-fuse
// tries to splice a plain ReadResultData, which costs a pipe and three
// system calls before it gives up).
func readResultBytes(b []byte) fuse.ReadResult { return fuse.ReadResultVector([][]byte{b}) }

// objectErrorStatus logs why an object cannot be served and returns the
// answer the overlay gives: ENOENT for a missing object, EIO otherwise (a
// digest mismatch above all).
func (f *fileSystem) objectErrorStatus(err error) fuse.Status {
	f.logger.Printf("%v", err)
	if errors.Is(err, fs.ErrNotExist) {
		return fuse.ENOENT
	}
	return fuse.EIO
}

// acquireObject returns the open, checked object of a node, opening it on
// first use. The caller must release it (f.objs.release).
func (f *fileSystem) acquireObject(g *generation, in *Inode, id uint64) (*refEntry[*os.File], fuse.Status) {
	if o, ok := f.objs.get(id); ok {
		return o, fuse.OK
	}
	f.prefetchAfter(g, in.Nid)
	file, err := f.openObject(g, in)
	if err != nil {
		return nil, f.objectErrorStatus(err)
	}
	return f.objs.add(id, file), fuse.OK
}

func (f *fileSystem) Lseek(cancel <-chan struct{}, in *fuse.LseekIn, out *fuse.LseekOut) fuse.Status {
	return fuse.ENOSYS
}

// maybeRelease closes an old generation once the kernel holds nothing of it.
func (f *fileSystem) maybeRelease(g *generation) {
	f.switchM.Lock()
	defer f.switchM.Unlock()
	t := f.tab.Load()
	if t.cur == g || t.byID[g.id] != g || g.refs.Load() > 0 {
		return
	}
	nt := &table{cur: t.cur, byID: make(map[uint64]*generation, len(t.byID))}
	for id, og := range t.byID {
		if og != g {
			nt.byID[id] = og
		}
	}
	f.tab.Store(nt)
	ofGen := func(id uint64) bool { return id>>genShift == g.id && id != fuse.FUSE_ROOT_ID }
	f.objs.removeWhere(ofGen)
	f.backing.removeWhere(ofGen)
	f.stored.Range(func(k, _ any) bool {
		if ofGen(k.(uint64)) {
			f.stored.Delete(k)
		}
		return true
	})
	g.close()
}

func (f *fileSystem) current() *generation { return f.tab.Load().cur }
