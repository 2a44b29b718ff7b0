// Package cas is the content-addressed object store behind mossfs images.
//
// Each object is a regular file named by the fs-verity digest of its content
// (SHA-256, 4096-byte blocks: see package fsverity), at objects/xx/<62 hex>,
// where xx are the first two hex digits. This is exactly the layout of a
// composefs / mkcomposefs --digest-store object directory, so the objects
// directory can be used as the overlay data-only lower layer of any
// composefs image whose redirects are "/" + [Payload], and a store written
// by mkcomposefs can be opened with [OpenObjectDir].
//
// A store made by [Create] has this layout:
//
//	meta.json      {"version":1,"algorithm":"fsverity-sha256-12","features":{…}}
//	objects/xx/…   the objects (mode 0600, fs-verity enabled where supported)
//	quarantine/    objects that failed verification (VerifyAll)
//	pending/       markers of ingest batches not yet synced (crash recovery)
//	lock           flock: shared for importers, exclusive for gc
//
// A store is private to its owner: Create makes its directories 0700 and
// its objects 0600, since the objects are the contents of every file of
// every image, whatever their modes in the image. Readers that mount need
// nothing more (overlayfs opens the data-only layer with the mounter's
// credentials). An object is never a hardlink of a file outside the store:
// PutFile copies or reflinks (a reflink is a new inode with its own mode), so
// making an object private never changes the mode of someone else's file.
// A bare digest store opened with OpenObjectDir keeps mkcomposefs's modes
// (0755 directories, 0644 objects), as tools sharing it expect.
//
// Ingest is atomic: content is written to an unnamed O_TMPFILE in the
// objects directory while it is hashed, then linked under its final name, so
// a half-written object never appears under a name. Objects are not fsynced
// one by one: [Store.Sync] makes everything durable with one syncfs(2), and
// callers must call it before publishing anything (an image, a transaction)
// that references new objects. Should the machine crash before that, the
// marker of the unsynced batch is left in pending/ and [Store.Recover]
// re-hashes exactly the objects written since.
//
// Concurrent writers (goroutines or processes) are safe: two writers of the
// same content race to link the same name; the loser sees EEXIST and keeps
// the winner's identical object.
package cas

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/mossfs/mossfs/internal/jsonpeek"
	"github.com/mossfs/mossfs/internal/smallfile"
	"golang.org/x/sys/unix"
)

// Version and Algorithm are what this package writes to meta.json and the
// only values it accepts there.
const (
	Version   = 1
	Algorithm = "fsverity-sha256-12"
)

const metaName = "meta.json"

// Meta is the content of a store's meta.json.
type Meta struct {
	Version   int      `json:"version"`
	Algorithm string   `json:"algorithm"`
	Features  Features `json:"features"`
}

// Features follow the ext4 model: an implementation ignores compatible
// features it does not know, may only read a store with unknown
// read-only-compatible features, and must refuse a store with unknown
// incompatible ones. This version defines none.
type Features struct {
	Compatible         []string `json:"compatible"`
	ReadOnlyCompatible []string `json:"read-only-compatible"`
	Incompatible       []string `json:"incompatible"`
}

// ObjectSink is what importers need from a store. *Store implements it.
type ObjectSink interface {
	// Put stores everything read from r and returns its fs-verity digest.
	Put(r io.Reader) ([32]byte, error)
	// PutFile stores a copy of the regular file at path (reflinked where
	// the filesystem allows) and returns its fs-verity digest.
	PutFile(path string) ([32]byte, error)
}

var _ ObjectSink = (*Store)(nil)

// ErrCorrupt is wrapped by Verify for an object whose content does not
// match its name.
var ErrCorrupt = errors.New("object content does not match its digest")

// Store is an object store. Its methods are safe for concurrent use.
type Store struct {
	root     string // "" for a bare object directory
	objects  string
	readOnly bool // unknown read-only-compatible features

	verity  atomic.Int32 // triState: does FS_IOC_ENABLE_VERITY work here?
	tmpfile atomic.Int32 // triState: does O_TMPFILE work here?
	reflink atomic.Int32 // triState: does FICLONE work here?
	fanout  [256]atomic.Bool
	// objectMode and dirMode are the modes of new objects and fan-out
	// directories: private in a store made by Create, mkcomposefs's in a
	// bare digest store.
	objectMode os.FileMode
	dirMode    os.FileMode
	batchMu    sync.RWMutex // commits hold it shared from marking to linking; Sync exclusively
	pendingMu  sync.Mutex
	pending    *os.File // marker of the current unsynced batch, flocked
}

// Modes of a store's files and directories: private to its owner.
const (
	privateDirMode  = 0o700
	privateFileMode = 0o600
)

const (
	unknown int32 = iota
	yes
	no
)

// Create makes a new store in dir (created if missing) and opens it. If dir
// already holds a store, Create opens it as Open does.
func Create(dir string) (*Store, error) {
	if _, err := os.Stat(filepath.Join(dir, metaName)); err == nil {
		return Open(dir)
	}
	if err := os.MkdirAll(dir, privateDirMode); err != nil {
		return nil, fmt.Errorf("creating object store: %w", err)
	}
	if err := os.Mkdir(filepath.Join(dir, "objects"), privateDirMode); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("creating object store: %w", err)
	}
	m := Meta{Version: Version, Algorithm: Algorithm, Features: Features{
		Compatible: []string{}, ReadOnlyCompatible: []string{}, Incompatible: []string{}}}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := writeFileAtomic(filepath.Join(dir, metaName), append(b, '\n')); err != nil {
		return nil, fmt.Errorf("creating object store: %w", err)
	}
	return Open(dir)
}

// Open opens the store in dir, refusing one whose meta.json names a version,
// algorithm or incompatible feature this package does not know.
func Open(dir string) (*Store, error) {
	path := filepath.Join(dir, metaName)
	b, err := smallfile.Read(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: not an object store (no %s; create one with cas.Create, or open a bare digest store with cas.OpenObjectDir)", dir, metaName)
	}
	if err != nil {
		return nil, fmt.Errorf("opening object store: %w", err)
	}
	m, ok := peekMeta(b)
	if !ok {
		if err := json.Unmarshal(b, &m); err != nil {
			return nil, fmt.Errorf("%s: invalid JSON: %w", path, err)
		}
	}
	if m.Version != Version {
		return nil, fmt.Errorf("%s: store version %d is not supported (this mossfs knows version %d)", path, m.Version, Version)
	}
	if m.Algorithm != Algorithm {
		return nil, fmt.Errorf("%s: store algorithm %q is not supported (this mossfs knows %q)", path, m.Algorithm, Algorithm)
	}
	if len(m.Features.Incompatible) > 0 {
		return nil, fmt.Errorf("%s: store needs features this mossfs does not know: %s", path, strings.Join(m.Features.Incompatible, ", "))
	}
	s := &Store{root: dir, objects: filepath.Join(dir, "objects"), readOnly: len(m.Features.ReadOnlyCompatible) > 0,
		objectMode: privateFileMode, dirMode: privateDirMode}
	if st, err := os.Stat(s.objects); err != nil {
		return nil, fmt.Errorf("opening object store: %w", err)
	} else if !st.IsDir() {
		return nil, fmt.Errorf("opening object store: %s is not a directory", s.objects)
	}
	return s, nil
}

// peekMeta reads meta.json without encoding/json (package jsonpeek says
// why) when it is as Create writes it: a plain version and algorithm, and
// features without read-only-compatible or incompatible ones (the
// compatible ones are ignored anyway). Otherwise it says no, and Open
// decodes it with encoding/json.
func peekMeta(b []byte) (Meta, bool) {
	var m Meta
	vals, ok := jsonpeek.Members(b, "version", "algorithm", "features")
	if !ok {
		return m, false
	}
	v, okV := jsonpeek.Uint(vals[0])
	alg, okA := jsonpeek.String(vals[1])
	if !okV || !okA || v > uint64(Version) {
		return m, false
	}
	if vals[2] != nil && string(vals[2]) != "null" {
		feat, ok := jsonpeek.Members(vals[2], "read-only-compatible", "incompatible")
		if !ok || feat[0] != nil && !jsonpeek.EmptyArray(feat[0]) || feat[1] != nil && !jsonpeek.EmptyArray(feat[1]) {
			return m, false
		}
	}
	return Meta{Version: int(v), Algorithm: alg}, true
}

// OpenObjectDir opens a bare composefs digest store: objects directly at
// dir/xx/<62 hex>, no meta.json (what mkcomposefs --digest-store writes).
// Such a store has no quarantine, pending markers or lock file.
func OpenObjectDir(dir string) (*Store, error) {
	st, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("opening object directory: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("opening object directory: %s is not a directory", dir)
	}
	return &Store{objects: dir, objectMode: 0o644, dirMode: 0o755}, nil
}

// Root returns the store directory ("" for a bare object directory).
func (s *Store) Root() string { return s.root }

// ObjectsDir returns the directory holding the xx/ fan-out directories: the
// overlay data-only lower layer.
func (s *Store) ObjectsDir() string { return s.objects }

// Payload returns the object path relative to the objects directory,
// "xx/<62 hex>"; an image's redirect xattr is "/" + Payload(d).
func Payload(d [32]byte) string {
	var b [65]byte
	hex.Encode(b[1:], d[:])
	b[0], b[1], b[2] = b[1], b[2], '/'
	return string(b[:])
}

// ParseDigest parses 64 lowercase or uppercase hex digits.
func ParseDigest(s string) ([32]byte, error) {
	var d [32]byte
	if len(s) != 64 {
		return d, fmt.Errorf("digest %q: want 64 hex digits, have %d characters", s, len(s))
	}
	if _, err := hex.Decode(d[:], []byte(s)); err != nil {
		return d, fmt.Errorf("digest %q: %w", s, err)
	}
	return d, nil
}

// ParsePayload parses an object path "xx/<62 hex>", with or without the
// leading "/" of a redirect.
func ParsePayload(p string) ([32]byte, error) {
	q := strings.TrimPrefix(p, "/")
	if len(q) != 65 || q[2] != '/' {
		return [32]byte{}, fmt.Errorf("payload %q: want xx/<62 hex digits>", p)
	}
	d, err := ParseDigest(q[:2] + q[3:])
	if err != nil {
		return d, fmt.Errorf("payload %q: %w", p, err)
	}
	return d, nil
}

// ObjectPath returns the path of the object d (whether or not it exists).
func (s *Store) ObjectPath(d [32]byte) string {
	return filepath.Join(s.objects, Payload(d))
}

// Has reports whether the object d exists.
func (s *Store) Has(d [32]byte) bool {
	_, ok := s.objectSize(d)
	return ok
}

// objectSize returns the size of object d if it exists as a regular file.
func (s *Store) objectSize(d [32]byte) (int64, bool) {
	var st unix.Stat_t
	if err := unix.Fstatat(unix.AT_FDCWD, s.ObjectPath(d), &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return 0, false
	}
	return st.Size, st.Mode&unix.S_IFMT == unix.S_IFREG
}

// Open opens the object d for reading.
func (s *Store) Open(d [32]byte) (*os.File, error) {
	return os.Open(s.ObjectPath(d))
}

// Remove deletes the object d. A missing object is not an error.
func (s *Store) Remove(d [32]byte) error {
	if err := os.Remove(s.ObjectPath(d)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing object: %w", err)
	}
	return nil
}

// Sync makes every object written so far durable with one syncfs(2) on the
// store's filesystem, then retires the batch's pending marker. Call it
// before publishing anything that references new objects.
func (s *Store) Sync() error {
	f, err := os.Open(s.objects)
	if err != nil {
		return fmt.Errorf("syncing object store: %w", err)
	}
	defer f.Close()
	// Wait for commits in flight (they link under batchMu.RLock), and make
	// later ones start a new marker: objects linked from here on are not
	// covered by this syncfs.
	s.batchMu.Lock()
	s.pendingMu.Lock()
	marker := s.pending
	s.pending = nil
	s.pendingMu.Unlock()
	s.batchMu.Unlock()
	if err := unix.Syncfs(int(f.Fd())); err != nil {
		if marker != nil {
			marker.Close() // unlocks it: Recover will check the batch
		}
		return fmt.Errorf("syncing object store %s: %w", s.objects, err)
	}
	if marker != nil {
		os.Remove(marker.Name())
		marker.Close()
	}
	return nil
}

// Unsynced reports whether some objects of the store may not be durable
// yet: an ingest batch, of this process or of another (running or
// crashed), has not been synced. Without one, every object in the store is
// durable, so a writer that stored no object of its own can make what it
// publishes durable by syncing its own files instead of the whole file
// system (Sync). A store without pending markers (no root) always answers
// true.
func (s *Store) Unsynced() bool {
	if s.root == "" {
		return true
	}
	s.pendingMu.Lock()
	own := s.pending
	s.pendingMu.Unlock()
	if own != nil {
		return true
	}
	f, err := os.Open(filepath.Join(s.root, pendingDir))
	if errors.Is(err, fs.ErrNotExist) {
		return false
	}
	if err != nil {
		return true
	}
	defer f.Close()
	names, err := f.Readdirnames(1)
	return len(names) > 0 || err != nil && err != io.EOF
}

// VeritySupported reports whether fs-verity could be enabled on objects of
// this store, as learned from the objects written so far; known is false
// before the first attempt.
func (s *Store) VeritySupported() (supported, known bool) {
	v := s.verity.Load()
	return v == yes, v != unknown
}

func writeFileAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, ".tmp-"+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return err
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// hexDigit reports whether c is a lowercase hex digit (object names are
// lowercase, as composefs writes them).
func hexDigit(c byte) bool { return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' }

func isHex(s string) bool {
	return !slices.ContainsFunc([]byte(s), func(c byte) bool { return !hexDigit(c) })
}
