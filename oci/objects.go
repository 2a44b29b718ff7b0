package oci

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/mossfs/mossfs/cas"
	"github.com/mossfs/mossfs/tree"
)

// ObjectDir reads payloads from an object directory (the store's
// cas/objects), never from outside it. An export opens one object per
// file, so the open is what counts: each xx/ fan-out directory is opened
// once, beneath the object directory (openat2 RESOLVE_BENEATH, no
// symlinks), and an object is then one openat of a single name in it with
// O_NOFOLLOW. That name cannot leave the fan-out directory: a payload
// takes this path only in the store's own form, "xx/" and 62 hex digits
// (cas.ParsePayload), so the name has no "/" and is not "." or "..", and
// O_NOFOLLOW refuses a symlink in its place. Any other payload takes one
// openat2 (RESOLVE_BENEATH, no symlinks) from the object directory.
// Objects are read with plain read(2)s on the descriptor (no poller, no
// fcntl). Close releases the directories.
type ObjectDir struct {
	dir   string
	dirfd int
	fan   [256]fanout

	rootOnce sync.Once // for kernels without openat2
	root     *os.Root
	rootErr  error
}

type fanout struct {
	once sync.Once
	fd   int
	err  error
}

// OpenObjectDir opens an object directory for reading payloads.
func OpenObjectDir(dir string) (*ObjectDir, error) {
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: dir, Err: err}
	}
	o := &ObjectDir{dir: dir, dirfd: fd}
	for i := range o.fan {
		o.fan[i].fd = -1
	}
	return o, nil
}

// Close releases the directory descriptors. Files opened before stay
// readable.
func (o *ObjectDir) Close() error {
	for i := range o.fan {
		f := &o.fan[i]
		f.once.Do(func() {}) // none is opened after Close
		if f.fd >= 0 {
			unix.Close(f.fd)
			f.fd = -1
		}
	}
	var err error
	o.rootOnce.Do(func() {})
	if o.root != nil {
		err = o.root.Close()
	}
	if o.dirfd >= 0 {
		unix.Close(o.dirfd)
		o.dirfd = -1
	}
	return err
}

// Open opens the payload of n; it is a ContentOpener.
func (o *ObjectDir) Open(n *tree.Node) (io.ReadCloser, error) {
	path := filepath.Join(o.dir, n.Payload)
	if strings.HasPrefix(n.Payload, "/") {
		return nil, fmt.Errorf("%s: absolute payload path", n.Payload)
	}
	d, perr := cas.ParsePayload(n.Payload)
	if perr != nil {
		return o.openBeneath(n.Payload)
	}
	f := &o.fan[d[0]]
	f.once.Do(func() {
		f.fd, f.err = o.openat2(n.Payload[:2], unix.O_PATH|unix.O_DIRECTORY)
	})
	if errors.Is(f.err, unix.ENOSYS) {
		return o.openBeneath(n.Payload)
	}
	if f.err != nil {
		return nil, &os.PathError{Op: "openat2", Path: filepath.Join(o.dir, n.Payload[:2]), Err: f.err}
	}
	fd, err := unix.Openat(f.fd, n.Payload[3:], unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		return nil, &os.PathError{Op: "openat", Path: path, Err: err}
	}
	return &objectFile{fd: fd, path: path}, nil
}

func (o *ObjectDir) openat2(name string, flags uint64) (int, error) {
	if o.dirfd < 0 {
		return -1, os.ErrClosed
	}
	return unix.Openat2(o.dirfd, name, &unix.OpenHow{
		Flags:   flags | unix.O_CLOEXEC | unix.O_NOFOLLOW,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	})
}

// openBeneath opens a payload by its whole path beneath the directory.
func (o *ObjectDir) openBeneath(payload string) (io.ReadCloser, error) {
	path := filepath.Join(o.dir, payload)
	fd, err := o.openat2(payload, unix.O_RDONLY)
	switch {
	case err == nil:
		return &objectFile{fd: fd, path: path}, nil
	case errors.Is(err, unix.ENOSYS):
		o.rootOnce.Do(func() { o.root, o.rootErr = os.OpenRoot(o.dir) })
		if o.rootErr != nil {
			return nil, o.rootErr
		}
		return o.root.Open(payload)
	default:
		return nil, &os.PathError{Op: "openat2", Path: path, Err: err}
	}
}

// objectFile is an object opened for reading: read(2) and close(2) on its
// descriptor, nothing else (os.NewFile would ask fcntl for its flags).
type objectFile struct {
	fd   int
	path string
}

func (f *objectFile) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
		n, err := unix.Read(f.fd, p)
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return 0, &os.PathError{Op: "read", Path: f.path, Err: err}
		case n == 0:
			return 0, io.EOF
		}
		return n, nil
	}
}

func (f *objectFile) Close() error {
	if f.fd < 0 {
		return os.ErrClosed
	}
	err := unix.Close(f.fd)
	f.fd = -1
	if err != nil {
		return &os.PathError{Op: "close", Path: f.path, Err: err}
	}
	return nil
}
