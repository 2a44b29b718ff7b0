package fusefs

import (
	"errors"
	"fmt"
	"os"
	"sync"

	"github.com/mossfs/mossfs/fsverity"
)

// ErrDigestMismatch is returned (and answered to readers as EIO) when an
// object's content does not match the digest its image records.
var ErrDigestMismatch = errors.New("object content does not match the image's fs-verity digest")

type verifyKey struct {
	digest  [32]byte
	payload string
}

type verifyEntry struct {
	once sync.Once
	err  error
}

// verifyContent is verify for an object whose content has been read whole
// into data: the digest is computed from those bytes (or, where the object
// has fs-verity, measured, the kernel having checked the reads), so the
// object is read once to check and serve it.
func (f *fileSystem) verifyContent(fd int, verity bool, path string, in *Inode, data []byte) error {
	if len(in.Digest) != 32 {
		return fmt.Errorf("%s: inode %d: digest of %d bytes, want 32", path, in.Nid, len(in.Digest))
	}
	key := verifyKey{payload: in.Payload}
	copy(key.digest[:], in.Digest)
	v, _ := f.verified.LoadOrStore(key, &verifyEntry{})
	e := v.(*verifyEntry)
	e.once.Do(func() { e.err = checkContent(fd, verity, path, key.digest, data) })
	if e.err != nil {
		f.verified.CompareAndDelete(key, e)
	}
	return e.err
}

func checkContent(fd int, verity bool, path string, want [32]byte, data []byte) error {
	if verity {
		if got, err := fsverity.Measure(fd); err == nil {
			if got != want {
				return fmt.Errorf("object %s: fs-verity digest %x, the image says %x: %w", path, got, want, ErrDigestMismatch)
			}
			return nil
		}
	}
	if got := fsverity.Sum(data); got != want {
		return fmt.Errorf("object %s: content digest %x, the image says %x: %w", path, got, want, ErrDigestMismatch)
	}
	return nil
}

// verify checks an object once per mount: the first open of an object
// computes (or, where the object has fs-verity enabled, measures) its
// digest; later opens reuse the result. Failures are not cached, so a
// repaired object is served again without a remount.
func (f *fileSystem) verify(file *os.File, path string, in *Inode) error {
	if len(in.Digest) != 32 {
		return fmt.Errorf("%s: inode %d: digest of %d bytes, want 32", path, in.Nid, len(in.Digest))
	}
	key := verifyKey{payload: in.Payload}
	copy(key.digest[:], in.Digest)
	v, _ := f.verified.LoadOrStore(key, &verifyEntry{})
	e := v.(*verifyEntry)
	e.once.Do(func() { e.err = checkObject(file, path, key.digest, in.Size) })
	if e.err != nil {
		f.verified.CompareAndDelete(key, e)
	}
	return e.err
}

func checkObject(file *os.File, path string, want [32]byte, size uint64) error {
	st, err := file.Stat()
	if err != nil {
		return fmt.Errorf("checking object %s: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("object %s is not a regular file", path)
	}
	if uint64(st.Size()) != size {
		return fmt.Errorf("object %s: %d bytes, the image says %d: %w", path, st.Size(), size, ErrDigestMismatch)
	}
	// With fs-verity enabled on the object the kernel checks every read
	// against the measured digest, so measuring is enough.
	if got, err := fsverity.Measure(int(file.Fd())); err == nil {
		if got != want {
			return fmt.Errorf("object %s: fs-verity digest %x, the image says %x: %w", path, got, want, ErrDigestMismatch)
		}
		return nil
	}
	got, err := fsverity.DigestReaderAt(file, st.Size())
	if err != nil {
		return fmt.Errorf("checking object %s: %w", path, err)
	}
	if got != want {
		return fmt.Errorf("object %s: content digest %x, the image says %x: %w", path, got, want, ErrDigestMismatch)
	}
	return nil
}
