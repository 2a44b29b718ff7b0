package cas

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mossfs/mossfs/fsverity"
)

// smallMax is the size up to which content is read into memory and hashed
// before anything is written, so content already in the store costs no
// write at all.
const smallMax = 1 << 20

var bufPool = sync.Pool{New: func() any { b := make([]byte, smallMax); return &b }}

// Put stores everything read from r and returns its fs-verity digest.
func (s *Store) Put(r io.Reader) ([32]byte, error) {
	d, _, err := s.PutHow(r)
	return d, err
}

// PutHow is Put, also saying whether the store already held the object
// (Present: nothing was written) or it was written (Copied). The content is
// hashed once, as it is read: up to smallMax bytes in memory before anything
// is written, larger content while it streams into a temporary file, which
// is dropped if the object turns out to be present.
func (s *Store) PutHow(r io.Reader) ([32]byte, How, error) {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	n, err := io.ReadFull(r, buf)
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return s.putBytes(buf[:n])
	}
	if err != nil {
		return [32]byte{}, Copied, fmt.Errorf("storing object: reading: %w", err)
	}
	// Larger than smallMax: stream into a temporary file while hashing.
	t, err := s.newTemp()
	if err != nil {
		return [32]byte{}, Copied, err
	}
	defer t.discard()
	h := fsverity.New()
	for {
		h.Write(buf[:n])
		if _, err := t.f.Write(buf[:n]); err != nil {
			return [32]byte{}, Copied, fmt.Errorf("storing object: %w", err)
		}
		n, err = io.ReadFull(r, buf)
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			if n == 0 {
				break
			}
			continue
		}
		if err != nil {
			return [32]byte{}, Copied, fmt.Errorf("storing object: reading: %w", err)
		}
	}
	d := h.Sum()
	size := int64(h.Size64())
	if have, ok := s.objectSize(d); ok && have == size {
		return d, Present, nil
	}
	return d, Copied, s.commit(t, d, size)
}

// PutBytes stores b and returns its fs-verity digest.
func (s *Store) PutBytes(b []byte) ([32]byte, error) {
	d, _, err := s.putBytes(b)
	return d, err
}

// PutBytesHow is PutBytes, also saying whether the object was present
// (nothing written) or written.
func (s *Store) PutBytesHow(b []byte) ([32]byte, How, error) { return s.putBytes(b) }

func (s *Store) putBytes(b []byte) ([32]byte, How, error) {
	var d [32]byte
	if len(b) > smallMax {
		d, _ = fsverity.DigestReaderAt(bytes.NewReader(b), int64(len(b)))
	} else {
		d = fsverity.Sum(b)
	}
	if size, ok := s.objectSize(d); ok && size == int64(len(b)) {
		return d, Present, nil
	}
	t, err := s.newTemp()
	if err != nil {
		return d, Copied, err
	}
	defer t.discard()
	if _, err := t.f.Write(b); err != nil {
		return d, Copied, fmt.Errorf("storing object: %w", err)
	}
	return d, Copied, s.commit(t, d, int64(len(b)))
}

// PutFile stores a copy of the regular file at path and returns its
// fs-verity digest. Small files are read once into memory, hashed and
// written. Larger ones are hashed in place on all cores and, if the store
// lacks them, cloned (FICLONE, sharing extents on btrfs/XFS) or copied in
// the kernel (copy_file_range); the source must not change meanwhile (its
// size and change time are checked after the copy).
func (s *Store) PutFile(path string) ([32]byte, error) {
	d, _, err := s.PutFileHow(path)
	return d, err
}

// How says how PutFileHow stored a file.
type How int

const (
	// Present: the store already held the object; nothing was written.
	Present How = iota
	// Reflinked: the object shares the source's extents (FICLONE).
	Reflinked
	// Copied: the object's bytes were written (or copied in the kernel).
	Copied
)

func (h How) String() string {
	switch h {
	case Present:
		return "present"
	case Reflinked:
		return "reflinked"
	}
	return "copied"
}

// PutFileHow is PutFile, also saying whether the object was already there,
// reflinked or copied. Where the store's file system can clone the source
// (same file system, FICLONE), small files are cloned too rather than
// written from memory.
func (s *Store) PutFileHow(path string) ([32]byte, How, error) {
	var d [32]byte
	src, err := os.Open(path)
	if err != nil {
		return d, Copied, fmt.Errorf("storing object: %w", err)
	}
	defer src.Close()
	var before unix.Stat_t
	if err := unix.Fstat(int(src.Fd()), &before); err != nil {
		return d, Copied, fmt.Errorf("storing object: stat %s: %w", path, err)
	}
	if before.Mode&unix.S_IFMT != unix.S_IFREG {
		return d, Copied, fmt.Errorf("storing object: %s is not a regular file", path)
	}
	size := before.Size
	var t *temp
	how := Copied
	if size <= smallMax {
		bp := bufPool.Get().(*[]byte)
		defer bufPool.Put(bp)
		buf := (*bp)[:size]
		if _, err := io.ReadFull(src, buf); err != nil {
			return d, Copied, fmt.Errorf("storing object: reading %s: %w", path, err)
		}
		d = fsverity.Sum(buf)
		if have, ok := s.objectSize(d); ok && have == size {
			return d, Present, nil
		}
		if t, err = s.newTemp(); err != nil {
			return d, Copied, err
		}
		defer t.discard()
		if size > 0 && s.reflink.Load() != no && s.clone(t.f, src) {
			how = Reflinked
		} else if _, err := t.f.Write(buf); err != nil {
			return d, Copied, fmt.Errorf("storing %s: storing object: %w", path, err)
		}
	} else {
		d, err = fsverity.DigestReaderAt(src, size)
		if err != nil {
			return d, Copied, fmt.Errorf("storing object: hashing %s: %w", path, err)
		}
		if have, ok := s.objectSize(d); ok && have == size {
			return d, Present, nil
		}
		if t, err = s.newTemp(); err != nil {
			return d, Copied, err
		}
		defer t.discard()
		reflinked, err := s.copyInto(t.f, src, size)
		if err != nil {
			return d, Copied, fmt.Errorf("storing object: copying %s: %w", path, err)
		}
		if reflinked {
			how = Reflinked
		}
	}
	var after unix.Stat_t
	if err := unix.Fstat(int(src.Fd()), &after); err != nil {
		return d, how, fmt.Errorf("storing object: stat %s: %w", path, err)
	}
	if after.Size != size || after.Ctim != before.Ctim || after.Mtim != before.Mtim {
		return d, how, fmt.Errorf("storing object: %s changed while it was being stored", path)
	}
	return d, how, s.commit(t, d, size)
}

// clone reflinks src into dst (FICLONE), remembering when the file system
// cannot.
func (s *Store) clone(dst, src *os.File) bool {
	err := unix.IoctlFileClone(int(dst.Fd()), int(src.Fd()))
	if err == nil {
		s.reflink.Store(yes)
		return true
	}
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOTTY) || errors.Is(err, unix.ENOSYS) {
		s.reflink.Store(no)
	}
	// EXDEV (other filesystem), EINVAL, …: copy instead.
	return false
}

// copyInto copies size bytes of src into the empty file dst: a reflink where
// the filesystem supports it (reflinked is then true), else
// copy_file_range, else read/write.
func (s *Store) copyInto(dst, src *os.File, size int64) (reflinked bool, err error) {
	if s.reflink.Load() != no && s.clone(dst, src) {
		return true, nil
	}
	return false, s.copyBytes(dst, src, size)
}

func (s *Store) copyBytes(dst, src *os.File, size int64) error {
	var off int64
	for off < size {
		n, err := unix.CopyFileRange(int(src.Fd()), &off, int(dst.Fd()), nil, int(min(size-off, 1<<30)), 0)
		if err != nil || n == 0 {
			if n == 0 && err == nil {
				return fmt.Errorf("source ended at %d of %d bytes", off, size)
			}
			if off == 0 && (errors.Is(err, unix.EXDEV) || errors.Is(err, unix.ENOSYS) ||
				errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP)) {
				break // not supported here: plain copy
			}
			return err
		}
	}
	if off == size {
		return nil
	}
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	n, err := io.CopyBuffer(onlyWriter{dst}, io.NewSectionReader(src, 0, size), *bp)
	if err != nil {
		return err
	}
	if n != size {
		return fmt.Errorf("source ended at %d of %d bytes", n, size)
	}
	return nil
}

type onlyWriter struct{ io.Writer }

// temp is an object being written: an unnamed O_TMPFILE, or a named
// ".tmp-…" file in the objects directory where O_TMPFILE is not supported.
// Neither can be taken for an object: objects live in xx/ subdirectories.
type temp struct {
	f    *os.File
	name string // "" for O_TMPFILE
}

func (s *Store) newTemp() (*temp, error) {
	if s.readOnly {
		return nil, fmt.Errorf("storing object: %s has read-only-compatible features this mossfs does not know", s.root)
	}
	if s.tmpfile.Load() != no {
		fd, err := unix.Open(s.objects, unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, uint32(s.objectMode))
		if err == nil {
			s.tmpfile.Store(yes)
			return &temp{f: os.NewFile(uintptr(fd), s.objects+"/(tmpfile)")}, nil
		}
		if !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.EISDIR) && !errors.Is(err, unix.EINVAL) {
			return nil, fmt.Errorf("storing object: creating temporary file in %s: %w", s.objects, err)
		}
		s.tmpfile.Store(no)
	}
	name := filepath.Join(s.objects, tempName())
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_EXCL, s.objectMode)
	if err != nil {
		return nil, fmt.Errorf("storing object: %w", err)
	}
	return &temp{f: f, name: name}, nil
}

func tempName() string {
	var b [8]byte
	rand.Read(b[:])
	return ".tmp-" + strconv.Itoa(os.Getpid()) + "-" + hex.EncodeToString(b[:])
}

// discard removes what is left of t after a failure (or after commit, where
// it only closes the file).
func (t *temp) discard() {
	if t.f != nil {
		t.f.Close()
		t.f = nil
	}
	if t.name != "" {
		os.Remove(t.name)
		t.name = ""
	}
}

// commit makes the complete content in t the object d of the given size:
// mode 0600 (0644 in a bare digest store), fs-verity enabled where
// supported, then linked under its final name. If the name already exists with the right size, another writer won
// and its object is kept.
func (s *Store) commit(t *temp, d [32]byte, size int64) error {
	if err := t.f.Chmod(s.objectMode); err != nil {
		return fmt.Errorf("storing object %s: %w", Payload(d), err)
	}
	if s.verity.Load() != no {
		if err := s.enableVerity(t); err != nil {
			return fmt.Errorf("storing object %s: %w", Payload(d), err)
		}
	}
	if err := s.ensureFanout(d); err != nil {
		return err
	}
	s.batchMu.RLock()
	defer s.batchMu.RUnlock()
	if err := s.markPending(); err != nil {
		return err
	}
	final := s.ObjectPath(d)
	err := t.link(final)
	if errors.Is(err, unix.ENOENT) {
		// The fan-out directory went (an importer removing the empty
		// directories of a refused import, see PruneFanout): make it again.
		s.fanout[d[0]].Store(false)
		if err := s.ensureFanout(d); err != nil {
			return err
		}
		err = t.link(final)
	}
	if errors.Is(err, unix.EEXIST) {
		if have, ok := s.objectSize(d); ok && have == size {
			return nil // another writer stored it first
		}
		// A wrong-sized object under this name is damage (a crash before
		// Sync): replace it.
		tmpName := filepath.Join(s.objects, tempName())
		if err := t.link(tmpName); err != nil {
			return fmt.Errorf("storing object %s: %w", final, err)
		}
		if err := os.Rename(tmpName, final); err != nil {
			os.Remove(tmpName)
			return fmt.Errorf("storing object %s: %w", final, err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("storing object %s: %w", final, err)
	}
	return nil
}

// link gives t the name path; for a named temp file the old name goes.
func (t *temp) link(path string) error {
	if t.name != "" {
		if err := os.Link(t.name, path); err != nil {
			return err
		}
		return nil // discard removes the temporary name
	}
	fd := int(t.f.Fd())
	err := unix.Linkat(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(fd), unix.AT_FDCWD, path, unix.AT_SYMLINK_FOLLOW)
	if errors.Is(err, unix.ENOENT) {
		// No /proc (early boot): AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH.
		if _, serr := os.Stat("/proc/self/fd"); serr != nil {
			err = unix.Linkat(fd, "", unix.AT_FDCWD, path, unix.AT_EMPTY_PATH)
		}
	}
	if err != nil {
		return &os.LinkError{Op: "link", Old: t.f.Name(), New: path, Err: err}
	}
	return nil
}

// enableVerity swaps t's writable fd for a read-only one (fs-verity refuses
// files open for writing) and enables verity on it. Where fs-verity is not
// supported it remembers so and succeeds.
func (s *Store) enableVerity(t *temp) error {
	var ro *os.File
	var err error
	if t.name != "" {
		ro, err = os.Open(t.name)
	} else {
		ro, err = os.Open("/proc/self/fd/" + strconv.Itoa(int(t.f.Fd())))
	}
	if err != nil {
		// Without /proc an O_TMPFILE cannot be reopened: no verity then.
		s.verity.Store(no)
		return nil
	}
	t.f.Close()
	t.f = ro
	for try := 0; ; try++ {
		err = fsverity.Enable(int(ro.Fd()))
		// ETXTBSY: a child forked meanwhile may hold a copy of the
		// writable fd until it execs (O_CLOEXEC): wait it out.
		if !errors.Is(err, unix.ETXTBSY) || try == 50 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	switch {
	case err == nil:
		s.verity.Store(yes)
	case errors.Is(err, fsverity.ErrNotSupported), errors.Is(err, unix.EINVAL):
		s.verity.Store(no)
	default:
		return err
	}
	return nil
}

// PruneFanout removes the fan-out directory of object d if it is empty, so
// that an import that was refused and removed its objects leaves the store
// as it found it. A writer that meant to use the directory makes it again.
func (s *Store) PruneFanout(d [32]byte) {
	if os.Remove(filepath.Join(s.objects, Payload(d)[:2])) == nil {
		s.fanout[d[0]].Store(false)
	}
}

func (s *Store) ensureFanout(d [32]byte) error {
	if s.fanout[d[0]].Load() {
		return nil
	}
	dir := filepath.Join(s.objects, Payload(d)[:2])
	if err := os.Mkdir(dir, s.dirMode); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("storing object: %w", err)
	}
	s.fanout[d[0]].Store(true)
	return nil
}

// markPending records, before the first object of a batch gets its name,
// that objects written from now until the next Sync may be lost or torn by
// a crash. The marker is durable (one fsync per batch) and flocked while
// this process lives, so Recover can tell a crashed batch from a running one.
func (s *Store) markPending() error {
	if s.root == "" {
		return nil
	}
	s.pendingMu.Lock()
	defer s.pendingMu.Unlock()
	if s.pending != nil {
		return nil
	}
	dir := filepath.Join(s.root, pendingDir)
	if err := os.Mkdir(dir, privateDirMode); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("storing object: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(dir, tempName()[len(".tmp-"):]), os.O_RDWR|os.O_CREATE|os.O_EXCL, privateFileMode)
	if err != nil {
		return fmt.Errorf("storing object: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		return fmt.Errorf("storing object: locking %s: %w", f.Name(), err)
	}
	// The marker's own time is the start of the batch; objects linked later
	// have a later ctime.
	fmt.Fprintf(f, "%d\n", time.Now().UnixNano())
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("storing object: %w", err)
	}
	if err := syncDir(dir); err != nil {
		f.Close()
		return fmt.Errorf("storing object: %w", err)
	}
	s.pending = f
	return nil
}

const pendingDir = "pending"
