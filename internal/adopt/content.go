package adopt

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strconv"
	"sync"

	"github.com/mossfs/mossfs/cas"
	"github.com/mossfs/mossfs/internal/stone"
	"github.com/zeebo/xxh3"
	"golang.org/x/sys/unix"
)

// Transfer counts how contents entered the store.
type Transfer struct {
	// Present: already in the store (known from an earlier import).
	PresentFiles int   `json:"present_files"`
	PresentBytes int64 `json:"present_bytes"`
	// Reflinked: the object shares moss's asset's extents.
	ReflinkedFiles int   `json:"reflinked_files"`
	ReflinkedBytes int64 `json:"reflinked_bytes"`
	// Copied: the object's bytes were written.
	CopiedFiles int   `json:"copied_files"`
	CopiedBytes int64 `json:"copied_bytes"`
}

func (t *Transfer) add(how cas.How, size int64) {
	switch how {
	case cas.Present:
		t.PresentFiles++
		t.PresentBytes += size
	case cas.Reflinked:
		t.ReflinkedFiles++
		t.ReflinkedBytes += size
	default:
		t.CopiedFiles++
		t.CopiedBytes += size
	}
}

// Content is what the asset import found for one XXH3-128.
type Content struct {
	Digest [32]byte
	Size   int64
}

// assetError names the asset and a file that uses it.
type assetError struct {
	x    stone.XXH128
	path string // relative to assets/v2
	user string // a path of the state that uses it
	err  error
}

func (e *assetError) Error() string {
	return fmt.Sprintf("moss asset assets/v2/%s (content of /usr/%s): %v", e.path, e.user, e.err)
}

func (e *assetError) Unwrap() error { return e.err }

// ErrAssetMismatch is wrapped when an asset's content does not hash to its
// name.
var ErrAssetMismatch = errors.New("content does not match its XXH3-128")

// importContents puts each wanted content into the store: those the
// known-content index maps to an object the store has are not read; the
// others are read from moss's assets (beneath assets, an os.Root), hashed
// with XXH3-128 and compared with their name while they go in, by reflink
// where the file system allows, else by copy. user names, for errors, a
// path that uses each content.
//
// index is told the SHA-256 of each content stored (the state's sha256
// index, which other tools look contents up by).
func importContents(ctx context.Context, store *cas.Store, index func(sha, verity [32]byte) error, known stone.KnownContent, assets *os.Root, want map[stone.XXH128]string, progress func(files int, bytes int64)) (map[stone.XXH128]Content, Transfer, error) {
	out := make(map[stone.XXH128]Content, len(want))
	var tr Transfer
	var todo []stone.XXH128
	for x := range want {
		if d, ok := known.Lookup(x); ok {
			if f, err := store.Open(d); err == nil {
				st, err := f.Stat()
				f.Close()
				if err == nil && st.Mode().IsRegular() {
					out[x] = Content{Digest: d, Size: st.Size()}
					tr.add(cas.Present, st.Size())
					continue
				}
			}
		}
		todo = append(todo, x)
	}
	// Largest first keeps the workers busy to the end.
	sizes := make(map[stone.XXH128]int64, len(todo))
	for _, x := range todo {
		st, err := assets.Lstat(stone.MossAssetPath(x))
		if err != nil {
			return nil, tr, &assetError{x, stone.MossAssetPath(x), want[x], errors.Unwrap(err)}
		}
		if !st.Mode().IsRegular() {
			return nil, tr, &assetError{x, stone.MossAssetPath(x), want[x], fmt.Errorf("not a regular file (%s)", st.Mode().Type())}
		}
		sizes[x] = st.Size()
	}
	slices.SortFunc(todo, func(a, b stone.XXH128) int {
		if sizes[a] != sizes[b] {
			if sizes[a] > sizes[b] {
				return -1
			}
			return 1
		}
		return slices.Compare(a[:], b[:])
	})
	if err := checkSpace(store, todo, sizes, assets); err != nil {
		return nil, tr, err
	}

	var (
		mu       sync.Mutex
		firstErr error
		wg       sync.WaitGroup
		files    int
		bytes    int64
	)
	jobs := make(chan stone.XXH128)
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for x := range jobs {
				c, how, err := putAsset(store, index, assets, x)
				mu.Lock()
				if err != nil {
					if firstErr == nil {
						firstErr = &assetError{x, stone.MossAssetPath(x), want[x], err}
					}
				} else {
					out[x] = c
					tr.add(how, c.Size)
					files++
					bytes += c.Size
					if progress != nil {
						progress(files, bytes)
					}
				}
				mu.Unlock()
			}
		})
	}
	for _, x := range todo {
		mu.Lock()
		failed := firstErr != nil
		mu.Unlock()
		if failed || ctx.Err() != nil {
			break
		}
		jobs <- x
	}
	close(jobs)
	wg.Wait()
	if firstErr == nil {
		firstErr = ctx.Err()
	}
	if firstErr != nil {
		return nil, tr, firstErr
	}
	for _, x := range todo {
		if err := known.Record(x, out[x].Digest); err != nil {
			return nil, tr, err
		}
	}
	return out, tr, nil
}

// putAsset stores one asset. The file is opened beneath assets/v2, hashed
// with XXH3-128 and compared with its name; the store then takes the same
// open file (cloned or copied), and the file must not have changed in
// between (size, mtime and ctime, checked after the store took it).
func putAsset(store *cas.Store, index func(sha, verity [32]byte) error, assets *os.Root, x stone.XXH128) (Content, cas.How, error) {
	f, err := assets.OpenFile(stone.MossAssetPath(x), os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return Content{}, 0, errors.Unwrap(err)
	}
	defer f.Close()
	var before unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &before); err != nil {
		return Content{}, 0, err
	}
	if before.Mode&unix.S_IFMT != unix.S_IFREG {
		return Content{}, 0, errors.New("not a regular file")
	}
	h, sh := xxh3.New(), sha256.New()
	n, err := io.Copy(io.MultiWriter(h, sh), f)
	if err != nil {
		return Content{}, 0, fmt.Errorf("reading: %w", err)
	}
	if n != before.Size {
		return Content{}, 0, fmt.Errorf("read %d bytes of %d: the file changed", n, before.Size)
	}
	if got := stone.XXH128(h.Sum128().Bytes()); got != x {
		return Content{}, 0, fmt.Errorf("%w: it hashes to %s", ErrAssetMismatch, got)
	}
	d, how, err := store.PutFileHow("/proc/self/fd/" + strconv.Itoa(int(f.Fd())))
	if err != nil {
		return Content{}, 0, err
	}
	var after unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &after); err != nil {
		return Content{}, 0, err
	}
	if after.Size != before.Size || after.Mtim != before.Mtim || after.Ctim != before.Ctim {
		return Content{}, 0, errors.New("changed while it was being stored")
	}
	if err := index([32]byte(sh.Sum(nil)), d); err != nil {
		return Content{}, 0, err
	}
	return Content{Digest: d, Size: before.Size}, how, nil
}

// ErrNoSpace is wrapped when the store's file system cannot hold the
// contents to copy.
var ErrNoSpace = errors.New("not enough free space")

// checkSpace makes sure the store's file system can take the new contents:
// their full size unless it can reflink from moss's assets (probed by
// cloning the largest one into an unnamed temporary file).
func checkSpace(store *cas.Store, todo []stone.XXH128, sizes map[stone.XXH128]int64, assets *os.Root) error {
	var need int64
	for _, x := range todo {
		// Blocks, not bytes: every object takes whole blocks.
		need += (sizes[x] + 4095) &^ 4095
	}
	if need == 0 {
		return nil
	}
	var fs unix.Statfs_t
	if err := unix.Statfs(store.ObjectsDir(), &fs); err != nil {
		return fmt.Errorf("free space of %s: %w", store.ObjectsDir(), err)
	}
	free := int64(fs.Bavail) * fs.Bsize
	if need+need/50 < free {
		return nil
	}
	if canReflink(store, assets, todo[0]) {
		return nil
	}
	return fmt.Errorf("%w: copying %d new contents from moss's assets needs about %d bytes on %s, %d are free (and the file system cannot reflink them)",
		ErrNoSpace, len(todo), need, store.ObjectsDir(), free)
}

func canReflink(store *cas.Store, assets *os.Root, x stone.XXH128) bool {
	src, err := assets.Open(stone.MossAssetPath(x))
	if err != nil {
		return false
	}
	defer src.Close()
	fd, err := unix.Open(store.ObjectsDir(), unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	return unix.IoctlFileClone(fd, int(src.Fd())) == nil
}
