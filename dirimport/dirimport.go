// Package dirimport builds the source tree (tree.Node) of a directory on disk,
// the way mkcomposefs 1.0.8 builds one from a directory, and stores the
// contents of its regular files in a content-addressed store.
//
// What it takes from each entry follows libcomposefs's lcfs_build and
// lcfs_load_node_from_file: the lstat mode, uid, gid, size, rdev and mtime
// (mtime 0 with UseEpoch), the symlink target, every xattr (none with
// SkipXattrs, user.* only with UserXattrs), and for regular files the
// fs-verity digest, with the payload "xx/<62 hex>" naming the object. Files
// of 1..InlineMax bytes are inlined (Content) instead, empty files have
// neither. The root node carries the directory's own metadata. Unlike
// mkcomposefs, which gives every name its own inode, hardlinks are kept: the
// first name in sorted depth-first order owns the inode, later names are
// LinkTo nodes.
//
// The walk never leaves the directory: every entry is opened relative to its
// parent's descriptor with openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS), so a
// symlink (or one swapped in while the import runs) is read as a link and
// never followed. Regular files are hashed and stored by Threads workers.
package dirimport

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/mossfs/mossfs/cas"
	"github.com/mossfs/mossfs/fsverity"
	"github.com/mossfs/mossfs/tree"
)

// ObjectSink stores file contents by fs-verity digest.
type ObjectSink = cas.ObjectSink

// bytesSink is the optional part of a sink storing a byte slice directly
// (cas.Store).
type bytesSink interface {
	PutBytes(b []byte) ([32]byte, error)
}

// smallFile is the size up to which a file is read here and handed to the
// sink as bytes.
const smallFile = 256 << 10

var smallBufs = sync.Pool{New: func() any { b := make([]byte, smallFile+1); return &b }}

// InlineMax is the largest regular file stored inline in the image
// (libcomposefs's LCFS_RECOMMENDED_INLINE_CONTENT_MAX: the length of the
// redirect it would otherwise need).
const InlineMax = 64

// Options control what Import reads and where contents go.
type Options struct {
	// Sink receives the content of every external regular file. nil: digests
	// are only computed.
	Sink ObjectSink
	// KeepInline also hands the content of inline files (1..InlineMax
	// bytes, still inlined in the tree) to Sink, if it stores bytes: a
	// store indexed by sha256 then offers them to partial pulls.
	KeepInline bool
	// UseEpoch sets every mtime to 0 (mkcomposefs --use-epoch).
	UseEpoch bool
	// SkipDevices leaves out character and block devices (--skip-devices).
	SkipDevices bool
	// SkipXattrs reads no xattrs (--skip-xattrs).
	SkipXattrs bool
	// UserXattrs keeps only user.* xattrs (--user-xattrs).
	UserXattrs bool
	// XattrNamespaces, if not empty, keeps only xattrs in these namespaces
	// ("user", "security", "trusted", "system"; a trailing dot is optional).
	XattrNamespaces []string
	// Threads hashing and storing file contents; <= 0 means one per CPU.
	Threads int
	// Progress, if set, is called (never concurrently) after each regular
	// file with the running totals of files and bytes done.
	Progress func(files, bytes int64)
}

// Import builds the tree of dir. On error the sink may hold objects of files
// already done (each object complete), and no tree is returned.
func Import(ctx context.Context, dir string, opts Options) (*tree.Node, error) {
	if opts.SkipXattrs && opts.UserXattrs {
		return nil, errors.New("dirimport: SkipXattrs and UserXattrs conflict")
	}
	rootFd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("import %s: %w", dir, err)
	}
	defer unix.Close(rootFd)
	im := &importer{
		opts:    opts,
		dir:     dir,
		rootFd:  rootFd,
		inodes:  make(map[devIno]*tree.Node),
		listBuf: make([]byte, xattrListMax),
		valBuf:  make([]byte, xattrSizeMax),
		dentBuf: make([]byte, 64<<10),
	}
	for _, ns := range opts.XattrNamespaces {
		im.namespaces = append(im.namespaces, strings.TrimSuffix(ns, ".")+".")
	}
	if opts.UserXattrs {
		im.namespaces = append(im.namespaces, "user.")
		im.userOnly = true
	}
	if _, err := os.Stat("/proc/self/fd"); err != nil && !opts.SkipXattrs {
		return nil, fmt.Errorf("import %s: reading xattrs needs /proc: %w", dir, err)
	}

	var st unix.Stat_t
	if err := unix.Fstat(rootFd, &st); err != nil {
		return nil, fmt.Errorf("import %s: %w", dir, err)
	}
	root := &tree.Node{}
	im.setMeta(root, &st)
	if err := im.readXattrs(rootFd, root); err != nil {
		return nil, fmt.Errorf("import %s: %w", dir, err)
	}
	if err := im.loadDir(ctx, rootFd, root, ""); err != nil {
		return nil, err
	}
	if err := im.contents(ctx); err != nil {
		return nil, err
	}
	return root, nil
}

// Linux limits (linux/limits.h) on a name list and on one value.
const (
	xattrListMax = 65536
	xattrSizeMax = 65536
)

type devIno struct{ dev, ino uint64 }

// job is a regular file whose content is read after the walk.
type job struct {
	node *tree.Node
	rel  string // path relative to the root
	id   devIno
	size int64
}

type importer struct {
	opts       Options
	dir        string
	rootFd     int
	namespaces []string // kept xattr prefixes ("user."); empty: all
	userOnly   bool
	inodes     map[devIno]*tree.Node // multiply linked non-directories seen
	jobs       []job

	listBuf, valBuf, dentBuf []byte // walk buffers (the walk is sequential)
}

func (im *importer) errorf(rel string, err error) error {
	return fmt.Errorf("import %s: %s: %w", im.dir, rel, err)
}

// resolveFlags keep every open inside the tree and refuse every symlink.
const resolveFlags = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS

func openBeneath(dirfd int, name string, flags uint64) (int, error) {
	how := unix.OpenHow{Flags: flags | unix.O_CLOEXEC, Resolve: resolveFlags}
	for range 16 {
		fd, err := unix.Openat2(dirfd, name, &how)
		if err == unix.EINTR || err == unix.EAGAIN { // EAGAIN: a concurrent rename; retry
			continue
		}
		if err == unix.ELOOP {
			return -1, fmt.Errorf("refusing to follow a symlink: %w", err)
		}
		return fd, err
	}
	return -1, unix.EAGAIN
}

func (im *importer) setMeta(n *tree.Node, st *unix.Stat_t) {
	n.Mode = st.Mode
	n.UID = st.Uid
	n.GID = st.Gid
	n.Nlink = 1
	n.Size = uint64(st.Size)
	if t := st.Mode & unix.S_IFMT; t == unix.S_IFCHR || t == unix.S_IFBLK {
		// The low 32 bits of the glibc dev_t are the kernel's new_encode_dev
		// for every major below 4096, which is what composefs stores.
		n.Rdev = uint32(st.Rdev)
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		n.Nlink = 2
	}
	if !im.opts.UseEpoch {
		n.Mtime = tree.Timespec{Sec: st.Mtim.Sec, Nsec: uint32(st.Mtim.Nsec)}
	}
}

// readNames returns the names in the directory fd, sorted in byte order.
func (im *importer) readNames(fd int) ([]string, error) {
	var names []string
	for {
		n, err := unix.Getdents(fd, im.dentBuf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, err
		}
		if n <= 0 {
			break
		}
		_, _, names = unix.ParseDirent(im.dentBuf[:n], -1, names)
	}
	slices.Sort(names)
	return names, nil
}

func (im *importer) loadDir(ctx context.Context, fd int, dir *tree.Node, rel string) error {
	names, err := im.readNames(fd)
	if err != nil {
		return im.errorf(cmp.Or(rel, "."), err)
	}
	for _, name := range names {
		if err := ctx.Err(); err != nil {
			return err
		}
		crel := path.Join(rel, name)
		c, err := im.loadEntry(ctx, fd, name, crel)
		if err != nil {
			return err
		}
		if c == nil {
			continue
		}
		dir.AddChild(c)
		if c.LinkTo == nil && c.Mode&tree.TypeMask == tree.TypeDir {
			dir.Nlink++
		}
	}
	return nil
}

// loadEntry reads one directory entry (recursing into directories); nil
// means the entry is skipped.
func (im *importer) loadEntry(ctx context.Context, parent int, name, rel string) (*tree.Node, error) {
	fd, err := openBeneath(parent, name, unix.O_PATH|unix.O_NOFOLLOW)
	if err != nil {
		return nil, im.errorf(rel, err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, im.errorf(rel, err)
	}
	typ := st.Mode & unix.S_IFMT
	if im.opts.SkipDevices && (typ == unix.S_IFCHR || typ == unix.S_IFBLK) {
		return nil, nil
	}
	n := &tree.Node{Name: name}
	if typ != unix.S_IFDIR && st.Nlink > 1 {
		id := devIno{st.Dev, st.Ino}
		if owner := im.inodes[id]; owner != nil {
			owner.Nlink++
			n.LinkTo = owner
			return n, nil
		}
		im.inodes[id] = n
	}
	im.setMeta(n, &st)
	if err := im.readXattrs(fd, n); err != nil {
		return nil, im.errorf(rel, err)
	}
	switch typ {
	case unix.S_IFLNK:
		// readlinkat with an empty path reads the link an O_PATH fd names.
		buf := make([]byte, unix.PathMax+1)
		k, err := unix.Readlinkat(fd, "", buf)
		if err != nil {
			return nil, im.errorf(rel, fmt.Errorf("readlink: %w", err))
		}
		if k == 0 || k > unix.PathMax-1 {
			return nil, im.errorf(rel, fmt.Errorf("symlink target of %d bytes", k))
		}
		n.Target = string(buf[:k])
		n.Size = uint64(k)
	case unix.S_IFREG:
		im.jobs = append(im.jobs, job{node: n, rel: rel, id: devIno{st.Dev, st.Ino}, size: st.Size})
	case unix.S_IFDIR:
		dfd, err := openBeneath(fd, ".", unix.O_RDONLY|unix.O_DIRECTORY)
		if err != nil {
			return nil, im.errorf(rel, err)
		}
		defer unix.Close(dfd)
		if err := im.loadDir(ctx, dfd, n, rel); err != nil {
			return nil, err
		}
	}
	return n, nil
}

// readXattrs reads the xattrs of the inode fd refers to (an O_PATH fd is
// fine: the /proc magic link resolves to the inode itself, symlinks
// included, as libcomposefs's read_xattrs does).
func (im *importer) readXattrs(fd int, n *tree.Node) error {
	if im.opts.SkipXattrs {
		return nil
	}
	p := "/proc/self/fd/" + strconv.Itoa(fd)
	size, err := unix.Listxattr(p, im.listBuf)
	if err == unix.ENOTSUP || err == unix.EOPNOTSUPP {
		return nil
	}
	if err != nil {
		return fmt.Errorf("listxattr: %w", err)
	}
	for name := range strings.SplitSeq(string(im.listBuf[:size]), "\x00") {
		if name == "" || !im.keepXattr(name) {
			continue
		}
		k, err := unix.Getxattr(p, name, im.valBuf)
		if err == unix.ENODATA { // removed meanwhile
			continue
		}
		if err != nil {
			return fmt.Errorf("getxattr %s: %w", name, err)
		}
		n.SetXattr(name, slices.Clone(im.valBuf[:k]))
	}
	return nil
}

func (im *importer) keepXattr(name string) bool {
	if im.userOnly && !strings.HasPrefix(name, "user.") {
		return false
	}
	if len(im.namespaces) == 0 {
		return true
	}
	for _, ns := range im.namespaces {
		if strings.HasPrefix(name, ns) {
			return true
		}
	}
	return false
}

// contents reads every regular file in parallel: inline content, or digest
// and payload (storing the object in the sink).
func (im *importer) contents(ctx context.Context) error {
	// Largest first, so that one big file does not finish alone at the end.
	slices.SortStableFunc(im.jobs, func(a, b job) int { return cmp.Compare(b.size, a.size) })
	threads := im.opts.Threads
	if threads <= 0 {
		threads = runtime.GOMAXPROCS(0)
	}
	threads = min(threads, max(len(im.jobs), 1))

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu           sync.Mutex
		firstErr     error
		files, bytes int64
		next         int
	)
	take := func() (int, bool) {
		mu.Lock()
		defer mu.Unlock()
		if firstErr != nil || next >= len(im.jobs) {
			return 0, false
		}
		next++
		return next - 1, true
	}
	var wg sync.WaitGroup
	for range threads {
		wg.Go(func() {
			for {
				i, ok := take()
				if !ok {
					return
				}
				err := ctx.Err()
				if err == nil {
					err = im.content(&im.jobs[i])
				}
				mu.Lock()
				if err != nil {
					if firstErr == nil {
						firstErr = err
						cancel()
					}
				} else {
					files++
					bytes += im.jobs[i].size
					if im.opts.Progress != nil {
						im.opts.Progress(files, bytes)
					}
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return firstErr
}

func (im *importer) content(j *job) error {
	fd, err := openBeneath(im.rootFd, j.rel, unix.O_RDONLY|unix.O_NOFOLLOW)
	if err != nil {
		return im.errorf(j.rel, err)
	}
	f := os.NewFile(uintptr(fd), path.Join(im.dir, j.rel))
	defer f.Close()
	var before unix.Stat_t
	if err := unix.Fstat(fd, &before); err != nil {
		return im.errorf(j.rel, err)
	}
	if (devIno{before.Dev, before.Ino}) != j.id || before.Size != j.size {
		return im.errorf(j.rel, errors.New("file replaced or changed while being imported"))
	}
	n := j.node
	switch {
	case j.size == 0:
		return nil
	case j.size <= InlineMax:
		buf := make([]byte, j.size+1)
		k, err := io.ReadFull(f, buf)
		if err != io.ErrUnexpectedEOF && err != nil {
			return im.errorf(j.rel, err)
		}
		if int64(k) != j.size {
			return im.errorf(j.rel, fmt.Errorf("read %d bytes, stat said %d: file changed while being imported", k, j.size))
		}
		n.Content = buf[:k]
		if bs, ok := im.opts.Sink.(bytesSink); ok && im.opts.KeepInline {
			if _, err := bs.PutBytes(n.Content); err != nil {
				return im.errorf(j.rel, err)
			}
		}
		return nil
	}
	var d [32]byte
	bs, isBytesSink := im.opts.Sink.(bytesSink)
	switch {
	case isBytesSink && j.size <= smallFile:
		// Small files: one read here saves the sink reopening the file.
		bp := smallBufs.Get().(*[]byte)
		defer smallBufs.Put(bp)
		var k int
		k, err = io.ReadFull(f, (*bp)[:j.size+1])
		if err == io.ErrUnexpectedEOF && int64(k) == j.size {
			d, err = bs.PutBytes((*bp)[:k])
		} else if err == nil || err == io.ErrUnexpectedEOF || err == io.EOF {
			err = fmt.Errorf("read %d bytes, stat said %d: file changed while being imported", k, j.size)
		}
	case im.opts.Sink != nil:
		// The magic link reopens this very inode: the sink cannot be led
		// elsewhere by a path swapped meanwhile.
		d, err = im.opts.Sink.PutFile("/proc/self/fd/" + strconv.Itoa(fd))
	default:
		d, err = fsverity.DigestReaderAt(f, j.size)
	}
	if err != nil {
		return im.errorf(j.rel, err)
	}
	var after unix.Stat_t
	if err := unix.Fstat(fd, &after); err != nil {
		return im.errorf(j.rel, err)
	}
	if after.Size != before.Size || after.Mtim != before.Mtim {
		return im.errorf(j.rel, errors.New("file changed while being imported"))
	}
	n.Digest = d[:]
	n.Payload = cas.Payload(d)
	return nil
}
