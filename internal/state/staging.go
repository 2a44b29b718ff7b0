package state

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// Staging directories: a partial pull writes the files it fetched into
// <root>/.partial-XXXX before their layer is applied. The directory is
// flocked (exclusive) by its process for as long as it is in use, so a
// directory nobody holds a lock on was left by a process that is gone (a
// crash, kill -9): gc and the crash recovery at lock time remove those, and
// never one that a live process holds.

// StagingPrefix begins the names of staging directories in the state root.
const StagingPrefix = ".partial-"

// Staging is a staging directory held by this process.
type Staging struct {
	Dir string
	f   *os.File
}

// NewStaging creates a private staging directory in the state root and
// locks it. Release removes it.
func (s *State) NewStaging() (*Staging, error) {
	dir, err := os.MkdirTemp(s.root, StagingPrefix)
	if err != nil {
		return nil, fmt.Errorf("staging: %w", err)
	}
	f, err := os.Open(dir)
	if err == nil {
		err = flockNB(f)
	}
	if err != nil {
		if f != nil {
			f.Close()
		}
		os.RemoveAll(dir)
		return nil, fmt.Errorf("staging %s: %w", dir, err)
	}
	return &Staging{Dir: dir, f: f}, nil
}

// Release removes the staging directory and drops its lock.
func (st *Staging) Release() error {
	if st == nil || st.f == nil {
		return nil
	}
	err := os.RemoveAll(st.Dir)
	st.f.Close()
	st.f = nil
	if err != nil {
		return fmt.Errorf("staging: %w", err)
	}
	return nil
}

func flockNB(f *os.File) error {
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err != unix.EINTR {
			return err
		}
	}
}

// staleStaging lists the staging directories in the state root that no
// live process holds, each returned open and locked by us (the caller
// closes them), so that none is taken up meanwhile.
func (s *State) staleStaging() ([]*os.File, error) {
	ents, err := os.ReadDir(s.root)
	if err != nil {
		return nil, fmt.Errorf("staging: %w", err)
	}
	var out []*os.File
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), StagingPrefix) {
			continue
		}
		f, err := os.OpenFile(filepath.Join(s.root, e.Name()), os.O_RDONLY|unix.O_NOFOLLOW|unix.O_DIRECTORY, 0)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue // released meanwhile
			}
			if errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.ELOOP) {
				// Not a directory of ours: a file under our prefix
				// left by hand; it is garbage too.
				if f, err = os.OpenFile(filepath.Join(s.root, e.Name()), os.O_RDONLY|unix.O_NOFOLLOW|unix.O_PATH, 0); err != nil {
					continue
				}
				out = append(out, f)
				continue
			}
			return nil, fmt.Errorf("staging: %w", err)
		}
		if flockNB(f) != nil {
			f.Close() // a live process holds it
			continue
		}
		out = append(out, f)
	}
	return out, nil
}

// sweepStaging removes the staging directories no live process holds and
// returns how many there were (with dryRun, removes nothing).
func (s *State) sweepStaging(dryRun bool) (int, error) {
	stale, err := s.staleStaging()
	if err != nil {
		return 0, err
	}
	var errs []error
	for _, f := range stale {
		if !dryRun {
			if err := os.RemoveAll(f.Name()); err != nil {
				errs = append(errs, fmt.Errorf("staging: %w", err))
			}
		}
		f.Close()
	}
	return len(stale), errors.Join(errs...)
}

// hasStaleStaging reports whether sweepStaging would remove anything.
func (s *State) hasStaleStaging() bool {
	stale, _ := s.staleStaging()
	for _, f := range stale {
		f.Close()
	}
	return len(stale) > 0
}
