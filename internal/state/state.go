// Package state keeps mossfs transactions: a content store (cas), one EROFS
// metadata image per transaction and a small metadata record per transaction,
// all under one state root (default /.moss, beside moss's own assets/, db/,
// root/ and cache/, none of whose names it uses):
//
//	state.json                  format marker {"format":"mossfs-state","version":1}
//	lock                        flock: shared for import/compose, exclusive for gc
//	txlock                      flock: exclusive for the short metadata updates
//	cas/                        the content store (objects/xx/<62 hex>)
//	images/<64 hex>             one image per transaction, named by its fs-verity digest
//	transactions/next           the id counter (decimal; ids are never reused)
//	transactions/<id>.json      metadata: id, parent, time, image, inputs, counts
//	transactions/<id>.inputs/   one fragment (composefs dump) per input, named
//	                            <sha256>.dump, hardlinked between transactions
//	active                      the active transaction id (decimal)
//	mounts/<name>.json          mount records, written by the mount helper
//	pins/<name>                 gc roots: a transaction id or sha256:<image hex>
//	known-content/              stone importer's XXH3-128 → fs-verity digest index
//	sha256/objects/             the sha256 index (sha256index.go)
//	sha256.log                  the sha256 of each indexed object, by object (objectsha.go)
//	follows-moss                the moss installation root whose state ids are
//	                            this root's transaction ids (moss-compose adopt)
//
// Permissions: the state root is private to its owner except for
// PublicRecords (state.json, active, transactions/<id>.json), which any user
// may read; everything else, new directories included, is 0700/0600. Code
// that adds to the state root follows perm.go (MkdirPrivate).
//
// A transaction's image is a /usr tree: its root is mounted at /usr, so a
// stone's paths (relative to /usr) sit at the image root. Every image holds a
// file .stateID with the decimal transaction id, as moss's /usr/.stateID.
//
// Atomicity: a transaction exists exactly when transactions/<id>.json exists.
// Compose writes objects, the image, the fragments and the counter under
// temporary or not-yet-referenced names, makes them durable with one syncfs
// (or, when it adds no new objects, with fsyncs of just its own files), and
// only then renames the metadata into place. Remove only unlinks metadata.
// A crash at any point leaves either the old state or the complete new
// transaction, plus garbage that gc removes (it holds the exclusive lock, so
// no compose is in flight then, and first makes removals durable).
//
// Inputs: every transaction records each package's layout and each tree as
// a fragment, so that compose --from, --remove, upgrades, conflict checks
// and "which input owns this path" need no original sources. Images are
// the truth for what a transaction holds: diff and gc read them.
package state

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/mossfs/mossfs/cas"
	"github.com/mossfs/mossfs/internal/jsonpeek"
	"github.com/mossfs/mossfs/internal/smallfile"
	"golang.org/x/sys/unix"
)

// DefaultRoot is the state root used when no --root is given.
const DefaultRoot = "/.moss"

// FormatVersion is the version of the state layout written to state.json.
const FormatVersion = 1

const formatName = "mossfs-state"

// ErrNotFound is returned (wrapped) for a transaction id that does not exist.
var ErrNotFound = errors.New("no such transaction")

// State is an opened state root.
type State struct {
	root  string
	store *cas.Store
	// madePrivate is what Open found exposed and made private.
	madePrivate []string
	// indexFan marks the sha256 index's fan-out directories known to exist.
	indexFan [256]atomic.Bool
	// shaLog holds object sha256 records not yet appended (objectsha.go).
	shaLog shaLog
}

type formatFile struct {
	Format  string `json:"format"`
	Version int    `json:"version"`
}

// readFormat reads and checks state.json.
func readFormat(root string) (formatFile, error) {
	var f formatFile
	data, err := smallfile.Read(filepath.Join(root, "state.json"))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return f, fmt.Errorf("open state %s: not a mossfs state root (no state.json; create one with import or compose)", root)
		}
		return f, fmt.Errorf("open state: %w", err)
	}
	// Most often the exact text Create writes: read without encoding/json
	// (package jsonpeek says why).
	vals, ok := jsonpeek.Members(data, "format", "version")
	format, okF := jsonpeek.String(vals[0])
	version, okV := jsonpeek.Uint(vals[1])
	if ok && okF && okV && version <= uint64(FormatVersion) {
		f = formatFile{Format: format, Version: int(version)}
	} else if err := json.Unmarshal(data, &f); err != nil {
		return f, fmt.Errorf("open state: %s: %w", filepath.Join(root, "state.json"), err)
	}
	if f.Format != formatName || f.Version != FormatVersion {
		return f, fmt.Errorf("open state: %s: format %q version %d, want %q version %d",
			filepath.Join(root, "state.json"), f.Format, f.Version, formatName, FormatVersion)
	}
	return f, nil
}

// Open opens an existing state root. Its owner (or root) also creates
// missing directories and makes private what others could reach beyond
// PublicRecords (see perm.go).
func Open(root string) (*State, error) {
	if _, err := readFormat(root); err != nil {
		return nil, err
	}
	s := &State{root: root}
	if ownedByUs(root) {
		// Best effort: a state root on a read-only file system (the
		// initramfs reading /sysroot) opens too; readers cope with
		// missing directories.
		_ = makeDirs(root)
		s.madePrivate = tightenModes(root)
	}
	st, err := cas.Open(filepath.Join(root, "cas"))
	if errors.Is(err, fs.ErrPermission) {
		return nil, fmt.Errorf("open state %s: %w (the store is private to its owner; others can read only %s)", root, err, strings.Join(PublicRecords, ", "))
	}
	if err != nil {
		return nil, fmt.Errorf("open state %s: %w", root, err)
	}
	s.store = st
	return s, nil
}

// OpenExisting opens an existing state root as Open does, without Open's
// upkeep: it neither creates missing directories nor makes private what
// others could reach (which looks at every top-level entry). It is for
// commands that only replace a few records, such as mossfs switch, which
// pays for every system call; the commands that add to the state root
// (import, compose, gc) open it with Open and keep it up.
func OpenExisting(root string) (*State, error) {
	if _, err := readFormat(root); err != nil {
		return nil, err
	}
	st, err := cas.Open(filepath.Join(root, "cas"))
	if errors.Is(err, fs.ErrPermission) {
		return nil, fmt.Errorf("open state %s: %w (the store is private to its owner; others can read only %s)", root, err, strings.Join(PublicRecords, ", "))
	}
	if err != nil {
		return nil, fmt.Errorf("open state %s: %w", root, err)
	}
	return &State{root: root, store: st}, nil
}

// OpenRecords opens a state root for reading only the records any user may
// read (PublicRecords): List, Get, IDs and Active work, the content store
// is not opened (Store returns nil), and Mounts reports records it cannot
// read as none. This is what `moss-compose state list` and `mossfs status`
// need as a user other than the store's owner.
func OpenRecords(root string) (*State, error) {
	s, err := Open(root)
	if err == nil || !errors.Is(err, fs.ErrPermission) {
		return s, err
	}
	if _, err := readFormat(root); err != nil {
		return nil, err
	}
	return &State{root: root}, nil
}

// makeDirs creates the state root's directories with their modes:
// transactions/ is public, the others are private (PublicRecords).
func makeDirs(root string) error {
	for _, d := range []string{"images", "mounts", "pins"} {
		if _, err := MkdirPrivate(root, d); err != nil {
			return err
		}
	}
	if err := os.Mkdir(filepath.Join(root, "transactions"), publicDirMode); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("create state: %w", err)
	}
	return nil
}

// Create opens the state root, creating it (and its content store) if it
// does not exist yet.
func Create(root string) (*State, error) {
	if _, err := os.Stat(filepath.Join(root, "state.json")); err == nil {
		return Open(root)
	}
	// The root itself is public (it holds PublicRecords); what is in it is
	// private unless listed there.
	if err := os.MkdirAll(root, publicDirMode); err != nil {
		return nil, fmt.Errorf("create state: %w", err)
	}
	if _, err := os.Stat(filepath.Join(root, "cas", "meta.json")); errors.Is(err, os.ErrNotExist) {
		if _, err := cas.Create(filepath.Join(root, "cas")); err != nil {
			return nil, fmt.Errorf("create state %s: %w", root, err)
		}
	}
	if err := makeDirs(root); err != nil {
		return nil, err
	}
	data, _ := json.Marshal(formatFile{Format: formatName, Version: FormatVersion})
	if err := writeFileAtomic(filepath.Join(root, "state.json"), append(data, '\n'), publicFileMode, true); err != nil {
		return nil, fmt.Errorf("create state: %w", err)
	}
	return Open(root)
}

// Root returns the state root directory.
func (s *State) Root() string { return s.root }

// Store returns the content store.
func (s *State) Store() *cas.Store { return s.store }

// ImagesDir returns the directory holding the images.
func (s *State) ImagesDir() string { return filepath.Join(s.root, "images") }

// ImagePath returns the path of a transaction's image.
func (s *State) ImagePath(tx *Transaction) string {
	return filepath.Join(s.root, "images", tx.Image)
}

// KnownContentPath is where importers keep their index of content already in
// the store (for stones: XXH3-128 → fs-verity digest).
func (s *State) KnownContentPath() string { return filepath.Join(s.root, "known-content") }

func (s *State) txDir() string { return filepath.Join(s.root, "transactions") }

func (s *State) metaPath(id uint64) string {
	return filepath.Join(s.txDir(), strconv.FormatUint(id, 10)+".json")
}

func (s *State) inputsDir(id uint64) string {
	return filepath.Join(s.txDir(), strconv.FormatUint(id, 10)+".inputs")
}

// Lock is a held lock; Unlock releases it.
type Lock struct {
	state *cas.FileLock
	store *cas.FileLock // nil for the transaction lock
}

// Unlock releases the lock.
func (l *Lock) Unlock() error {
	if l == nil || l.state == nil {
		return nil
	}
	err := l.store.Unlock()
	if serr := l.state.Unlock(); err == nil {
		err = serr
	}
	l.state = nil
	return err
}

// takeLock flocks the file at path with cas's lock helpers: exclusive or
// shared, waiting or not (then failing with an error wrapping ErrBusy).
func takeLock(path string, exclusive, wait bool) (*cas.FileLock, error) {
	var l *cas.FileLock
	var err error
	switch {
	case exclusive && wait:
		l, err = cas.Lock(path)
	case exclusive:
		l, err = cas.TryLock(path)
	case wait:
		l, err = cas.RLock(path)
	default:
		l, err = cas.TryRLock(path)
	}
	if errors.Is(err, cas.ErrLocked) {
		return nil, fmt.Errorf("%w (%v)", ErrBusy, err)
	}
	return l, err
}

// lockBoth takes the state root's lock, then the content store's own lock
// the same way (so that tools writing to the store directly are excluded
// from gc too). The order is always state, then store.
func (s *State) lockBoth(exclusive, wait bool) (*Lock, error) {
	l, err := takeLock(filepath.Join(s.root, "lock"), exclusive, wait)
	if err != nil {
		return nil, err
	}
	sl, err := takeLock(filepath.Join(s.store.Root(), "lock"), exclusive, wait)
	if err != nil {
		l.Unlock()
		return nil, err
	}
	return &Lock{state: l, store: sl}, nil
}

// ErrBusy is returned (wrapped) when a lock taken without waiting is held
// by another process (gc while an import or compose runs).
var ErrBusy = errors.New("the store is in use by another process")

// Lock takes the store lock shared: held by import and compose for their
// whole run, so that gc (exclusive) never sees objects, images or fragments
// of a compose that is still in flight.
//
// A batch of objects that a crashed writer never synced may hold torn
// objects that Has would trust; before an import could skip content because
// of one, such a store is recovered (cas Recover) under the exclusive lock.
// Staging directories of partial pulls that crashed are removed then too
// (see staging.go). That lock is only tried: if others hold the store (or this process does,
// as when Compose runs under a caller's Lock) recovery is left to the next
// Lock or gc rather than risk waiting on ourselves.
func (s *State) Lock() (*Lock, error) {
	if s.store.NeedsRecovery() || s.hasStaleStaging() {
		lk, err := s.lockBoth(true, false)
		switch {
		case err == nil:
			err = s.recoverStore()
			if err == nil {
				_, err = s.sweepStaging(false)
			}
			lk.Unlock()
			if err != nil {
				return nil, err
			}
		case !errors.Is(err, ErrBusy):
			return nil, err
		}
	}
	return s.lockBoth(false, true)
}

// recoverStore runs the content store's crash recovery (cas Recover); the
// caller holds the exclusive lock. Objects it quarantines (torn by a crash)
// lose their sha256 index links too, durably, so the index never names an
// object the store lacks (a partial pull would trust it).
func (s *State) recoverStore() error {
	rep, err := s.store.Recover(context.Background(), cas.VerifyOptions{})
	if err != nil {
		return fmt.Errorf("recovering the store after a crash: %w", err)
	}
	if rep.Quarantined == 0 {
		return nil
	}
	n, err := s.sweepIndex(s.store.Has, false)
	if err != nil {
		return fmt.Errorf("recovering the store after a crash: %w", err)
	}
	if n > 0 {
		if err := s.Sync(); err != nil {
			return fmt.Errorf("recovering the store after a crash: %w", err)
		}
	}
	return nil
}

// LockExclusive takes the store lock exclusive (gc), waiting for imports
// and composes to finish.
func (s *State) LockExclusive() (*Lock, error) { return s.lockBoth(true, true) }

// TryLockExclusive takes the store lock exclusive without waiting; it
// fails with an error wrapping ErrBusy when an import or compose runs.
func (s *State) TryLockExclusive() (*Lock, error) { return s.lockBoth(true, false) }

// txLock serialises the short metadata updates (id counter, publish, remove,
// active).
func (s *State) txLock() (*Lock, error) {
	l, err := takeLock(filepath.Join(s.root, "txlock"), true, true)
	if err != nil {
		return nil, err
	}
	return &Lock{state: l}, nil
}

// Sync makes everything written under the state root durable with one
// syncfs: the content store's Sync, which also retires its batch marker (so
// that the next gc does not re-hash the batch). Should cas/ be a different
// file system, the state root is synced too.
func (s *State) Sync() error {
	if err := s.flushSHALog(); err != nil {
		return err
	}
	if err := s.store.Sync(); err != nil {
		return err
	}
	var a, b unix.Stat_t
	if unix.Stat(s.root, &a) == nil && unix.Stat(s.store.ObjectsDir(), &b) == nil && a.Dev == b.Dev {
		return nil
	}
	return syncfs(s.root)
}

func syncfs(dir string) error {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("syncfs %s: %w", dir, err)
	}
	defer unix.Close(fd)
	if err := unix.Syncfs(fd); err != nil {
		return fmt.Errorf("syncfs %s: %w", dir, err)
	}
	return nil
}

func fsyncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", dir, err)
	}
	return nil
}

// writeFileAtomic writes data (with mode; see fileMode) under a temporary name in the same directory
// and renames it into place. With durable, the file is fsynced before the
// rename and the directory after it; without, the caller's later syncfs
// makes it durable before anything depends on it.
func writeFileAtomic(path string, data []byte, mode os.FileMode, durable bool) error {
	dir, base := filepath.Split(path)
	f, err := os.CreateTemp(dir, ".tmp-"+base+"-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := f.Chmod(mode); err != nil {
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if durable {
		if err := f.Sync(); err != nil {
			return fmt.Errorf("write %s: %w", tmp, err)
		}
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	ok = true
	if durable {
		return fsyncDir(dir)
	}
	return nil
}

func readUint(path string) (uint64, bool, error) {
	data, err := smallfile.Read(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	v, err := strconv.ParseUint(strings.TrimSpace(string(data)), 10, 64)
	if err != nil {
		return 0, false, fmt.Errorf("%s: not a decimal number: %q", path, strings.TrimSpace(string(data)))
	}
	return v, true, nil
}
