// Package durable replaces small files atomically and durably, several at
// once for about the cost of one: each new content goes to a temporary file
// beside its target, writeback of all of them starts together, each is
// fsynced (on a journalling file system the first fsync commits them all,
// the others find nothing left to do), then all are renamed into place and
// each directory is fsynced once. Writing N files one by one costs 2N
// journal commits; a batch costs about two.
//
// A crash leaves every target either old or new, never partly written; a
// batch is not all-or-nothing (some renames may survive a crash, others not).
package durable

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"golang.org/x/sys/unix"
)

// File is one file to replace.
type File struct {
	Path string
	Data []byte
	Perm os.FileMode // 0 means 0644
}

// Write replaces the files, in order. When it returns nil, every file has
// its new content and that survives a crash. On error no temporary file is
// left behind; files renamed before the error keep their new content.
func Write(files ...File) error {
	type pending struct {
		f        *os.File
		tmp, dst string
		renamed  bool
	}
	ps := make([]*pending, 0, len(files))
	ok := false
	defer func() {
		if ok {
			return
		}
		for _, p := range ps {
			if p.f != nil {
				p.f.Close()
			}
			if !p.renamed {
				os.Remove(p.tmp)
			}
		}
	}()
	for _, fl := range files {
		dir, base := filepath.Split(fl.Path)
		if dir == "" {
			dir = "."
		}
		f, err := os.CreateTemp(dir, ".tmp-"+base+"-*")
		if err != nil {
			return fmt.Errorf("write %s: %w", fl.Path, err)
		}
		p := &pending{f: f, tmp: f.Name(), dst: fl.Path}
		ps = append(ps, p)
		perm := fl.Perm
		if perm == 0 {
			perm = 0o644
		}
		if _, err := f.Write(fl.Data); err != nil {
			return fmt.Errorf("write %s: %w", p.tmp, err)
		}
		if err := f.Chmod(perm); err != nil {
			return fmt.Errorf("write %s: %w", p.tmp, err)
		}
		// Start writeback now, so the fsyncs below find the data of all
		// files on its way and one journal commit covers them. Only a hint:
		// the fsync is what makes it durable.
		_ = unix.SyncFileRange(int(f.Fd()), 0, 0, unix.SYNC_FILE_RANGE_WRITE)
	}
	for _, p := range ps {
		if err := p.f.Sync(); err != nil {
			return fmt.Errorf("write %s: fsync: %w", p.tmp, err)
		}
	}
	for _, p := range ps {
		err := p.f.Close()
		p.f = nil
		if err != nil {
			return fmt.Errorf("write %s: %w", p.tmp, err)
		}
	}
	var dirs []string
	for _, p := range ps {
		if err := os.Rename(p.tmp, p.dst); err != nil {
			return fmt.Errorf("write %s: %w", p.dst, err)
		}
		p.renamed = true
		if d := filepath.Dir(p.dst); !slices.Contains(dirs, d) {
			dirs = append(dirs, d)
		}
	}
	ok = true
	var errs []error
	for _, d := range dirs {
		if err := SyncDir(d); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// SyncDir fsyncs a directory, making the renames and unlinks in it durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("fsync %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", dir, err)
	}
	return nil
}
