package cas

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mossfs/mossfs/fsverity"
)

// Walk calls fn for every object in the store, in digest order, with its
// size. Files that are not objects (temporary files, other names) are
// skipped; WalkStrays reports them. An error from fn stops the walk and is
// returned.
func (s *Store) Walk(fn func(d [32]byte, size int64) error) error {
	return s.WalkStrays(fn, nil)
}

// WalkStrays is Walk that also calls stray, if not nil, with the path
// (relative to the objects directory) of every entry that is not an object.
// Strays named ".tmp-*" at the top are the temporary files of writers on
// filesystems without O_TMPFILE: only remove them while holding the store's
// exclusive lock (no writer running).
func (s *Store) WalkStrays(fn func(d [32]byte, size int64) error, stray func(rel string)) error {
	return s.walk(func(d [32]byte, st *unix.Stat_t) error { return fn(d, st.Size) }, stray)
}

func (s *Store) walk(fn func(d [32]byte, st *unix.Stat_t) error, stray func(rel string)) error {
	if stray == nil {
		stray = func(string) {}
	}
	top, err := os.ReadDir(s.objects)
	if err != nil {
		return fmt.Errorf("walking object store: %w", err)
	}
	var d [32]byte
	for _, e := range top {
		name := e.Name()
		if len(name) != 2 || !isHex(name) || !e.IsDir() {
			stray(name)
			continue
		}
		dir := filepath.Join(s.objects, name)
		f, err := os.Open(dir)
		if err != nil {
			return fmt.Errorf("walking object store: %w", err)
		}
		names, err := f.Readdirnames(-1)
		if err != nil {
			f.Close()
			return fmt.Errorf("walking object store: %s: %w", dir, err)
		}
		slices.Sort(names)
		for _, n := range names {
			rel := name + "/" + n
			if len(n) != 62 || !isHex(n) {
				stray(rel)
				continue
			}
			var st unix.Stat_t
			if err := unix.Fstatat(int(f.Fd()), n, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				if errors.Is(err, unix.ENOENT) {
					continue // removed meanwhile
				}
				f.Close()
				return fmt.Errorf("walking object store: %s: %w", filepath.Join(dir, n), err)
			}
			if st.Mode&unix.S_IFMT != unix.S_IFREG {
				stray(rel)
				continue
			}
			hex.Decode(d[:1], []byte(name))
			hex.Decode(d[1:], []byte(n))
			if err := fn(d, &st); err != nil {
				f.Close()
				return err
			}
		}
		f.Close()
	}
	return nil
}

// Verify re-hashes the object d and fails with an error wrapping ErrCorrupt
// if its content does not match its name, or if the kernel reports a
// different fs-verity digest for it.
func (s *Store) Verify(d [32]byte) error {
	_, err := s.verify(d)
	return err
}

// verify returns the number of bytes hashed.
func (s *Store) verify(d [32]byte) (int64, error) {
	path := s.ObjectPath(d)
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("verifying object: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, fmt.Errorf("verifying object: %w", err)
	}
	if !st.Mode().IsRegular() {
		return 0, fmt.Errorf("verifying object %s: not a regular file: %w", path, ErrCorrupt)
	}
	if m, err := fsverity.Measure(int(f.Fd())); err == nil && m != d {
		return 0, fmt.Errorf("verifying object %s: kernel fs-verity digest is %x: %w", path, m, ErrCorrupt)
	}
	got, err := fsverity.DigestReaderAt(f, st.Size())
	if err != nil {
		// An I/O error (EIO from a verity file with a bad block) is damage too.
		return st.Size(), fmt.Errorf("verifying object %s: %w (%w)", path, err, ErrCorrupt)
	}
	if got != d {
		return st.Size(), fmt.Errorf("verifying object %s: content digest is %x: %w", path, got, ErrCorrupt)
	}
	return st.Size(), nil
}

// VerifyOptions select what VerifyAll checks.
type VerifyOptions struct {
	// Digests, if not nil, are the objects to check (missing ones are
	// reported); nil checks every object in the store.
	Digests [][32]byte
	// Workers is the number of objects hashed at once; 0 means GOMAXPROCS.
	Workers int
	// NoQuarantine leaves bad objects in place instead of moving them to
	// quarantine/ (a bare object directory has no quarantine: bad objects
	// stay there and are only reported).
	NoQuarantine bool
	// Progress, if not nil, is called after each object (from several
	// goroutines, never concurrently) with the bytes and objects done so
	// far and the totals.
	Progress func(p VerifyProgress)
}

// VerifyProgress is passed to VerifyOptions.Progress.
type VerifyProgress struct {
	Objects, TotalObjects int
	Bytes, TotalBytes     int64
}

// VerifyReport is the result of VerifyAll.
type VerifyReport struct {
	Checked     int           `json:"checked"`
	Bytes       int64         `json:"bytes"`
	Bad         []BadObject   `json:"bad"`
	Missing     []string      `json:"missing"` // payloads of requested objects not in the store
	Strays      []string      `json:"strays"`  // entries of the objects directory that are not objects
	Quarantined int           `json:"quarantined"`
	Elapsed     time.Duration `json:"elapsed_ns"`
}

// BadObject is an object that failed verification.
type BadObject struct {
	Payload     string `json:"payload"`
	Error       string `json:"error"`
	Quarantined string `json:"quarantined,omitempty"` // where it was moved
}

// VerifyAll re-hashes all objects (or opts.Digests) on all cores and moves
// bad ones to quarantine/ under the store root. The error is for failures of
// the check itself (an unreadable directory, a cancelled ctx); damaged
// objects are in the report.
func (s *Store) VerifyAll(ctx context.Context, opts VerifyOptions) (VerifyReport, error) {
	start := time.Now()
	var rep VerifyReport
	type job struct {
		d    [32]byte
		size int64
	}
	var jobs []job
	var total int64
	if opts.Digests == nil {
		err := s.WalkStrays(func(d [32]byte, size int64) error {
			jobs = append(jobs, job{d, size})
			total += size
			return nil
		}, func(rel string) { rep.Strays = append(rep.Strays, rel) })
		if err != nil {
			return rep, err
		}
	} else {
		for _, d := range opts.Digests {
			size, ok := s.objectSize(d)
			if !ok {
				rep.Missing = append(rep.Missing, Payload(d))
				continue
			}
			jobs = append(jobs, job{d, size})
			total += size
		}
	}
	workers := opts.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	var (
		mu        sync.Mutex
		next      atomic.Int64
		doneBytes int64
		doneObj   int
		wg        sync.WaitGroup
	)
	for range min(workers, max(len(jobs), 1)) {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= len(jobs) {
					return
				}
				j := jobs[i]
				_, err := s.verify(j.d)
				var bad *BadObject
				if err != nil {
					bad = &BadObject{Payload: Payload(j.d), Error: err.Error()}
					if errors.Is(err, ErrCorrupt) && !opts.NoQuarantine && s.root != "" {
						q, qerr := s.quarantine(j.d)
						if qerr == nil {
							bad.Quarantined = q
						} else {
							bad.Error += "; " + qerr.Error()
						}
					}
				}
				mu.Lock()
				doneObj++
				doneBytes += j.size
				if bad != nil {
					rep.Bad = append(rep.Bad, *bad)
					if bad.Quarantined != "" {
						rep.Quarantined++
					}
				}
				if opts.Progress != nil {
					opts.Progress(VerifyProgress{Objects: doneObj, TotalObjects: len(jobs), Bytes: doneBytes, TotalBytes: total})
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	rep.Checked, rep.Bytes = doneObj, doneBytes
	slices.SortFunc(rep.Bad, func(a, b BadObject) int { return strings.Compare(a.Payload, b.Payload) })
	rep.Elapsed = time.Since(start)
	if err := ctx.Err(); err != nil {
		return rep, fmt.Errorf("verifying object store: %w", err)
	}
	return rep, nil
}

// quarantine moves object d to quarantine/<64 hex>[.N] under the store root.
func (s *Store) quarantine(d [32]byte) (string, error) {
	dir := filepath.Join(s.root, "quarantine")
	if err := os.Mkdir(dir, privateDirMode); err != nil && !errors.Is(err, fs.ErrExist) {
		return "", fmt.Errorf("quarantine: %w", err)
	}
	base := filepath.Join(dir, hex.EncodeToString(d[:]))
	for i := 0; ; i++ {
		q := base
		if i > 0 {
			q += "." + strconv.Itoa(i)
		}
		// link + unlink rather than rename, so an earlier quarantined copy
		// is never overwritten.
		err := os.Link(s.ObjectPath(d), q)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if err != nil {
			return "", fmt.Errorf("quarantine: %w", err)
		}
		if err := os.Remove(s.ObjectPath(d)); err != nil {
			return "", fmt.Errorf("quarantine: %w", err)
		}
		return q, nil
	}
}

// NeedsRecovery reports whether a batch of objects was written and never
// synced by a process that is gone (a crash): Recover should run.
func (s *Store) NeedsRecovery() bool {
	m, _ := s.staleMarkers()
	for _, f := range m {
		f.Close()
	}
	return len(m) > 0
}

// staleMarkers returns the pending markers whose writer is gone, each open
// and flocked by us.
func (s *Store) staleMarkers() ([]*os.File, error) {
	if s.root == "" {
		return nil, nil
	}
	dir := filepath.Join(s.root, pendingDir)
	names, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", dir, err)
	}
	s.pendingMu.Lock()
	own := s.pending
	s.pendingMu.Unlock()
	var out []*os.File
	for _, e := range names {
		f, err := os.Open(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		if own != nil && sameFile(f, own) {
			f.Close()
			continue
		}
		if unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) != nil {
			f.Close() // its writer is alive
			continue
		}
		out = append(out, f)
	}
	return out, nil
}

func sameFile(a, b *os.File) bool {
	sa, err1 := a.Stat()
	sb, err2 := b.Stat()
	return err1 == nil && err2 == nil && os.SameFile(sa, sb)
}

// recoverySlack covers the coarse clock behind file timestamps.
const recoverySlack = 2 * time.Second

// Recover checks the objects that crashed, never-synced batches may have
// left torn: every object whose inode changed since the oldest stale pending
// marker (less a 2 s margin for coarse file timestamps) is re-hashed (bad ones quarantined, as VerifyAll does), then the
// markers are removed. It does nothing when there is no stale marker, and
// never touches the batches of live writers. Run it before trusting Has
// after a crash, e.g. when taking the store's exclusive lock.
func (s *Store) Recover(ctx context.Context, opts VerifyOptions) (VerifyReport, error) {
	markers, err := s.staleMarkers()
	if err != nil || len(markers) == 0 {
		return VerifyReport{}, err
	}
	defer func() {
		for _, f := range markers {
			f.Close()
		}
	}()
	since := time.Now()
	for _, f := range markers {
		t := markerTime(f)
		if t.Before(since) {
			since = t
		}
	}
	since = since.Add(-recoverySlack)
	var ds [][32]byte
	err = s.walk(func(d [32]byte, st *unix.Stat_t) error {
		if time.Unix(st.Ctim.Unix()).After(since) {
			ds = append(ds, d)
		}
		return nil
	}, nil)
	if err != nil {
		return VerifyReport{}, err
	}
	opts.Digests = ds
	if ds == nil {
		opts.Digests = [][32]byte{}
	}
	rep, err := s.VerifyAll(ctx, opts)
	if err != nil {
		return rep, err
	}
	// Only now are the objects known good: make that durable, then forget.
	if err := s.Sync(); err != nil {
		return rep, err
	}
	for _, f := range markers {
		os.Remove(f.Name())
	}
	return rep, nil
}

// markerTime is the batch start written in the marker, or its mtime.
func markerTime(f *os.File) time.Time {
	b := make([]byte, 32)
	n, _ := f.ReadAt(b, 0)
	if ns, err := strconv.ParseInt(string(bytes.TrimSpace(b[:n])), 10, 64); err == nil {
		return time.Unix(0, ns)
	}
	if st, err := f.Stat(); err == nil {
		return st.ModTime()
	}
	return time.Unix(0, 0) // unknown: check everything
}
