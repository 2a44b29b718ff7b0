package cas

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// FileLock is an flock(2) held on a lock file until Unlock (or the process
// exits: a crashed holder never leaves a stale lock).
type FileLock struct {
	fd   int
	held bool
}

// Lock takes an exclusive lock on the file at path (created if missing),
// waiting for other holders. Garbage collection takes it.
func Lock(path string) (*FileLock, error) { return lockFile(path, unix.LOCK_EX) }

// RLock takes a shared lock on the file at path (created if missing),
// waiting for an exclusive holder. Importers take it.
func RLock(path string) (*FileLock, error) { return lockFile(path, unix.LOCK_SH) }

// ErrLocked is returned by TryLock and TryRLock when the lock is held.
var ErrLocked = errors.New("lock is held by another process")

// TryLock is Lock without waiting: it fails with ErrLocked.
func TryLock(path string) (*FileLock, error) { return lockFile(path, unix.LOCK_EX|unix.LOCK_NB) }

// TryRLock is RLock without waiting: it fails with ErrLocked.
func TryRLock(path string) (*FileLock, error) { return lockFile(path, unix.LOCK_SH|unix.LOCK_NB) }

func lockFile(path string, how int) (*FileLock, error) {
	// A bare descriptor: an os.File would try the poller first (five more
	// system calls; mossfs switch takes two locks).
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CREAT|unix.O_CLOEXEC, privateFileMode)
	if err != nil {
		return nil, fmt.Errorf("lock: %w", &os.PathError{Op: "open", Path: path, Err: err})
	}
	for {
		err = unix.Flock(fd, how)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		unix.Close(fd)
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("lock %s: %w", path, ErrLocked)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return &FileLock{fd: fd, held: true}, nil
}

// Unlock releases the lock.
func (l *FileLock) Unlock() error {
	if l == nil || !l.held {
		return nil
	}
	err := unix.Close(l.fd) // closing the only fd drops the flock
	l.held = false
	return err
}

// Lock takes the store's exclusive lock (root/lock), for gc.
func (s *Store) Lock() (*FileLock, error) {
	if s.root == "" {
		return nil, fmt.Errorf("lock: %s is a bare object directory without a lock file", s.objects)
	}
	return Lock(filepath.Join(s.root, "lock"))
}

// RLock takes the store's shared lock (root/lock), for importers.
func (s *Store) RLock() (*FileLock, error) {
	if s.root == "" {
		return nil, fmt.Errorf("lock: %s is a bare object directory without a lock file", s.objects)
	}
	return RLock(filepath.Join(s.root, "lock"))
}
