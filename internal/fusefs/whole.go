package fusefs

import (
	"fmt"
	"path/filepath"
	"sync"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// Small files are read once, whole, and served from the bytes that were
// checked (no-open mode).
//
// Checking an object's digest reads all of it. For a small file the daemon
// keeps those bytes: a read that reaches the daemon is answered from them,
// and the rest of the file goes into the kernel's page cache at once
// (FUSE_NOTIFY_STORE), so the reader's next reads of the file ask the
// daemon nothing. Files that the prefetcher opens ahead of the reader
// (prefetch.go) are stored whole the same way. Only checked bytes are ever
// handed to the kernel: a mismatch answers EIO and stores nothing.
//
// Larger files keep the other path: the object stays open (objs) and each
// read is a pread of the range the kernel asked for.
const wholeMax = 1 << 20

// Buffers for whole reads come in two sizes, so that the many small files
// do not each hold a megabyte.
const wholeSmall = 64 << 10

var (
	wholeSmallPool = sync.Pool{New: func() any { b := make([]byte, wholeSmall); return &b }}
	wholeLargePool = sync.Pool{New: func() any { b := make([]byte, wholeMax); return &b }}
)

func getWholeBuf(n int) *[]byte {
	if n <= wholeSmall {
		return wholeSmallPool.Get().(*[]byte)
	}
	return wholeLargePool.Get().(*[]byte)
}

func putWholeBuf(bp *[]byte) {
	if cap(*bp) == wholeSmall {
		wholeSmallPool.Put(bp)
	} else {
		wholeLargePool.Put(bp)
	}
}

// readWhole reads in's object whole into a pooled buffer and checks it
// against the image's digest (unless that was done before, or NoVerify).
// The caller puts the buffer back (putWholeBuf) once data is no longer
// used. in.Size must be at most wholeMax.
func (f *fileSystem) readWhole(g *generation, in *Inode) (bp *[]byte, data []byte, err error) {
	fd, path, err := g.openPayload(in)
	if err != nil {
		return nil, nil, err
	}
	defer unix.Close(fd)
	return f.readWholeFd(in, fd, path)
}

// openPayload opens in's object (read-only, non-blocking).
func (g *generation) openPayload(in *Inode) (int, string, error) {
	p := in.Payload
	if !filepath.IsLocal(p) {
		return -1, "", fmt.Errorf("%s: inode %d: object path %q leaves the object directory", g.image, in.Nid, p)
	}
	fd, path, err := g.openObjectFd(p, unix.O_NONBLOCK)
	if err != nil {
		return -1, "", fmt.Errorf("%s: inode %d: %w", g.image, in.Nid, err)
	}
	return fd, path, nil
}

// readWholeFd is readWhole of the object open at fd (path names it).
func (f *fileSystem) readWholeFd(in *Inode, fd int, path string) (bp *[]byte, data []byte, err error) {
	var stx unix.Statx_t
	if err := unix.Statx(fd, "", unix.AT_EMPTY_PATH, unix.STATX_TYPE|unix.STATX_SIZE, &stx); err != nil {
		return nil, nil, fmt.Errorf("checking object %s: %w", path, err)
	}
	if stx.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, nil, fmt.Errorf("object %s is not a regular file", path)
	}
	if stx.Size != in.Size {
		return nil, nil, fmt.Errorf("object %s: %d bytes, the image says %d: %w", path, stx.Size, in.Size, ErrDigestMismatch)
	}
	bp = getWholeBuf(int(in.Size))
	data = (*bp)[:in.Size]
	for off := 0; off < len(data); {
		n, err := unix.Pread(fd, data[off:], int64(off))
		if err == unix.EINTR {
			continue
		}
		if err != nil || n == 0 {
			putWholeBuf(bp)
			if err == nil {
				err = fmt.Errorf("%d bytes, want %d: %w", off, len(data), ErrDigestMismatch)
			}
			return nil, nil, fmt.Errorf("reading object %s: %w", path, err)
		}
		off += n
	}
	if !f.opts.NoVerify && in.Digest != nil {
		verity := stx.Attributes_mask&unix.STATX_ATTR_VERITY != 0 && stx.Attributes&unix.STATX_ATTR_VERITY != 0
		if err := f.verifyContent(fd, verity, path, in, data); err != nil {
			putWholeBuf(bp)
			return nil, nil, err
		}
	}
	return bp, data, nil
}

// storeCache hands checked content of a node to the kernel's page cache.
// It must not be called while a read of the same pages waits for this
// goroutine's answer: the kernel holds those pages locked until then.
func (f *fileSystem) storeCache(id uint64, off int, data []byte) bool {
	if f.server == nil || len(data) == 0 {
		return len(data) == 0
	}
	if !f.server.InodeNotifyStoreCache(id, int64(off), data).Ok() {
		return false
	}
	// Counted once the kernel has the pages (tests wait for this count
	// before they read the rest and expect no READ request).
	f.stores.Add(1)
	return true
}

// wholeResult answers a read from a whole, checked file, and hands the part
// of the file after the answered range to the page cache once the answer
// has been sent (before that the kernel holds those pages locked, if its
// readahead asked for them too).
type wholeResult struct {
	f        *fileSystem
	id       uint64
	bp       *[]byte
	data     []byte // the whole file
	from, to int    // the answered range
}

func (r *wholeResult) Size() int { return r.to - r.from }

func (r *wholeResult) Bytes([]byte) ([]byte, fuse.Status) { return r.data[r.from:r.to], fuse.OK }

// Slices makes go-fuse write the answer with writev instead of trying to
// splice it.
func (r *wholeResult) Slices() ([][]byte, fuse.Status) {
	return [][]byte{r.data[r.from:r.to]}, fuse.OK
}

func (r *wholeResult) Done() {
	if r.bp == nil {
		return
	}
	if r.to < len(r.data) {
		r.f.storeCache(r.id, r.to, r.data[r.to:])
	}
	putWholeBuf(r.bp)
	r.bp = nil
}
