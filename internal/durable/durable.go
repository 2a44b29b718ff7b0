// Package durable replaces small files atomically and durably, several at
// once for about the cost of one: each new content goes to a temporary file
// beside its target, all the temporary files are fsynced (fdatasync: their
// data and size, not their times) at the same time,
// then all are renamed into place and their directories are fsynced at the
// same time. Writing N files one by one costs 2N journal commits and cache
// flushes, one after the other; a batch costs two rounds: on a journalling
// file system the first fsync of a round commits the journal for all of
// them, and the flushes the others ask for at the same time are merged by
// the block layer; without a journal (the development machines' root file
// system is ext4 without one) each fsync writes its own inode and data, and
// at the same time their writes and flushes overlap.
//
// Why fsyncs and not one syncfs(2) per file system: syncfs writes back
// everything dirty on the file system, other programs' data too. On the
// machine this was measured on (ext4 on virtio, shared with busy builds and
// pulls), medians of three runs: a bare syncfs 5–37 ms, an fsync of a new
// small file 0.7–1.7 ms; a batch of four files in three directories (mossfs
// switch) 6.2–11.5 ms with concurrent fsyncs, 8.6–11.7 ms one after the
// other, 7.4–37 ms with syncfs rounds.
//
// A crash leaves every target either old or new, never partly written; a
// batch is not all-or-nothing (some renames may survive a crash, others not).
// TestCrashKeepsBatch shows both on a real ext4 shut down without flushing
// its log after Write returns.
//
// Begin splits Write in two, so that the data fsyncs run while the caller
// does other work: Begin writes the temporary files and starts their fsyncs
// in the background, Add puts more files in the batch, Commit waits for the
// fsyncs and only then renames and fsyncs the directories; Abort drops the
// batch with no target touched. mossfs switch begins its batch before it
// builds the new mount and commits once the mount is in place.
//
// A file replaced over and over (mossfs switch's four) can go through a swap
// file kept beside it (File.Swap): the new content is written over the swap
// file's, made durable, and the two names are exchanged (renameat2
// RENAME_EXCHANGE), so that the swap file then holds the old content, to be
// overwritten by the next replacement. No inode is allocated or freed. On
// ext4 that cuts the CPU time and the wait of a switch's batch by a third or
// more: BenchmarkSwitchBatch (its four files, root file system of the
// development machine, ext4 without a journal; two runs of 300 alternating
// batches at load 10, with the lock below) took 1.01-1.05 ms of CPU per
// batch against 1.68-1.74 ms with new temporary files, Begin 0.28-0.31
// against 0.54-0.97 ms, Commit 1.33-1.96 against 1.57-4.08 ms. End to end,
// mossfs switch over mossfs --version (BenchmarkSwitch with the binary
// before this as its baseline, three runs of 200 pairs at load 10-17, the
// last with the lock) cost 5.7, 3.4, 6.5 ms of wall time idle against 6.0,
// 4.2, 11.1; its CPU time was within the noise of that machine (2.7, 2.3,
// 3.0 ms against 3.4, 2.2, 3.8). Making a new file and freeing the one it
// replaces is what costs there (in a trial, a temporary file made with
// O_TMPFILE cost as much). A crash leaves the target old or new, as before
// (TestCrashKeepsBatch). The price: a program that opened the target before
// it was replaced, and reads it only after the next replacement has begun,
// can read the next content or a mix (the inode it holds is being
// rewritten); readers that read a file right after opening it (mossfs's own
// do) do not. A swap file rewritten at its old size leaves only its times
// to write besides the data, which fdatasync skips: on the development
// machine's ext4 without a journal that is one inode write and wait less per
// file. mossfs switch over mossfs --version (BenchmarkSwitch beside the
// build with fsync, 1000 pairs, two runs): idle 1.4 and 1.9 ms against 1.7
// and 2.1, with 4 busy readers 1.6 and 2.0 ms against 2.8 and 2.9.
// TestCrashKeepsBatch's swap cases rewrite files at their old size. The
// swap file is used only if it is a regular file of the
// caller's with one link; otherwise it is removed and made anew. It is
// locked (flock) from before it is written until it has been exchanged; a
// writer of the same file that finds it locked (writers of one file need not
// share a lock) takes a temporary file instead, so two never mix their
// contents. Where the file system cannot exchange names, the swap file is
// renamed over the target as a temporary file would be.
//
// The files are handled with bare system calls (openat, write, fsync and
// renameat relative to each directory's descriptor): os.File costs five
// more per file here (it tries the poller: fcntl twice, epoll_ctl, fcntl
// twice), and a system call costs 3 µs or more on the virtual machines
// mossfs is developed on.
package durable

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"
)

// File is one file to replace.
type File struct {
	Path string
	Data []byte
	Perm os.FileMode // 0 means 0644
	// Swap replaces the file through a swap file kept beside it, named
	// SwapName: for files replaced often (see the package comment).
	Swap bool
}

// SwapName is the name of the swap file kept beside a file named base
// that is written with File.Swap.
func SwapName(base string) string { return ".swap-" + base }

// testSkip leaves out a step, for the test that shows that the crash check
// notices each one missing.
var testSkip struct{ dataSync, dirSync bool }

// Write replaces the files, in order. When it returns nil, every file has
// its new content and that survives a crash. On error no temporary file is
// left behind; files renamed before the error keep their new content.
func Write(files ...File) error {
	b := Begin(files...)
	return b.Commit()
}

// Batch is a batch of durable writes in progress (see Begin). Its methods
// are for one goroutine.
type Batch struct {
	dirs  []*dir
	files []*pending
	err   error // the first error of Begin or Add
	wg    sync.WaitGroup
	done  bool
}

// dir is a directory of the batch, open for openat, renameat and fsync.
type dir struct {
	path string
	fd   int
	olds []int // the files being replaced in it, held open
}

// pending is one file of the batch: its temporary file, written and being
// fsynced.
type pending struct {
	d       *dir
	dst     string // target path
	base    string // target name in d
	tmp     string // temporary name in d
	fd      int    // closed by the fsync goroutine
	syncErr error  // set by the fsync goroutine
	renamed bool
	created bool
	swap    bool // tmp is the swap file: exchange it with the target
}

// Begin starts a batch: it writes each file's new content to a temporary
// file beside its target and starts the fsyncs of all of them at once, in
// the background. Nothing is visible until Commit. An error (a missing
// directory, a full disk) is kept and returned by Commit, which then
// removes the temporary files.
func Begin(files ...File) *Batch {
	b := &Batch{}
	b.Add(files...)
	return b
}

// Add puts more files in the batch, as Begin does. After Commit or Abort
// it does nothing.
func (b *Batch) Add(files ...File) {
	if b.done {
		return
	}
	for _, fl := range files {
		if b.err != nil {
			return
		}
		if err := b.add(fl); err != nil {
			b.err = err
		}
	}
}

func (b *Batch) add(fl File) error {
	dpath, base := filepath.Split(fl.Path)
	if dpath == "" {
		dpath = "."
	}
	dpath = filepath.Clean(dpath)
	var d *dir
	for _, o := range b.dirs {
		if o.path == dpath {
			d = o
		}
	}
	if d == nil {
		fd, err := unix.Open(dpath, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("write %s: %w", fl.Path, &os.PathError{Op: "open", Path: dpath, Err: err})
		}
		d = &dir{path: dpath, fd: fd}
		b.dirs = append(b.dirs, d)
	}
	perm := fl.Perm.Perm()
	if fl.Perm == 0 {
		perm = 0o644
	}
	p := &pending{d: d, dst: fl.Path, base: base, fd: -1}
	// A second file for the same target in this batch takes a temporary
	// file: the swap file is the first one's.
	if fl.Swap && !b.swapping(d, base) {
		if err := b.swapFile(p, fl.Data, perm); err != nil {
			return err
		}
		if p.swap {
			return b.startSync(p)
		}
	}
	// Hold the file being replaced: the rename then only unlinks it, and
	// freeing its inode and blocks (two thirds of a rename's cost here)
	// happens when Commit lets go of it, beside the directory fsyncs
	// instead of before them.
	if old, err := unix.Openat(d.fd, base, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0); err == nil {
		d.olds = append(d.olds, old)
	}
	var err error
	for range 100 {
		p.tmp = ".tmp-" + base + "-" + strconv.FormatUint(uint64(rand.Uint32()), 10)
		p.fd, err = unix.Openat(d.fd, p.tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o600)
		if err != unix.EEXIST {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", fl.Path, &os.PathError{Op: "create", Path: filepath.Join(dpath, p.tmp), Err: err})
	}
	b.files = append(b.files, p)
	p.created = true
	if err := p.writeAt(fl.Data); err != nil {
		return err
	}
	// The temporary file was created 0600 (before the umask), as
	// os.CreateTemp does; the target gets exactly perm.
	if err := unix.Fchmod(p.fd, uint32(perm)); err != nil {
		return fmt.Errorf("write %s: chmod: %w", filepath.Join(dpath, p.tmp), err)
	}
	return b.startSync(p)
}

// swapping reports whether a file of the batch already goes to base in d
// through its swap file.
func (b *Batch) swapping(d *dir, base string) bool {
	for _, o := range b.files {
		if o.swap && o.d == d && o.base == base {
			return true
		}
	}
	return false
}

// swapFile takes p's swap file for the new content: it opens it (or
// creates it), locks it and writes data over what it holds, and sets
// p.swap, with p.fd open (and locked) until Commit has exchanged it. It
// leaves p.swap false when p takes a temporary file instead: the swap file
// is another writer's at the moment (writers of one file need not share a
// lock: mossfs bls beside a switch), or unfit and could not be replaced.
//
// The swap file is locked (flock) from before it is written until after
// it is exchanged, and a writer that finds it locked does not wait: two
// writers never write into one swap file, nor into a file that has
// become the target meanwhile (checked once the lock is held).
func (b *Batch) swapFile(p *pending, data []byte, perm os.FileMode) error {
	name := SwapName(p.base)
	for attempt := 0; attempt < 2; attempt++ {
		created := false
		// O_NONBLOCK: a FIFO put there must not block the open.
		fd, err := unix.Openat(p.d.fd, name, unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
		if err == unix.ENOENT {
			fd, err = unix.Openat(p.d.fd, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
			if err == unix.EEXIST {
				return nil // another writer's, just made
			}
			if err != nil {
				return fmt.Errorf("write %s: %w", p.dst, &os.PathError{Op: "create", Path: filepath.Join(p.d.path, name), Err: err})
			}
			created = true
		}
		var st unix.Stat_t
		if err == nil {
			if unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB) != nil {
				unix.Close(fd)
				return nil // in another writer's hands
			}
			var cur unix.Stat_t
			if unix.Fstat(fd, &st) != nil || unix.Fstatat(p.d.fd, name, &cur, unix.AT_SYMLINK_NOFOLLOW) != nil || cur.Dev != st.Dev || cur.Ino != st.Ino {
				unix.Close(fd)
				return nil // exchanged by another writer meanwhile: not the swap file now
			}
			if !created && (st.Mode&unix.S_IFMT != unix.S_IFREG || st.Nlink != 1 || int(st.Uid) != os.Geteuid()) {
				unix.Close(fd)
				err = unix.EEXIST
			}
		}
		if err != nil {
			// Not ours to write into (a link to another file, someone
			// else's, not a regular file): a new one replaces it.
			if uerr := unix.Unlinkat(p.d.fd, name, 0); uerr != nil && uerr != unix.ENOENT {
				return fmt.Errorf("write %s: %w", p.dst, &os.PathError{Op: "remove", Path: filepath.Join(p.d.path, name), Err: uerr})
			}
			continue
		}
		p.swap, p.tmp, p.fd = true, name, fd
		b.files = append(b.files, p)
		if err := p.writeAt(data); err != nil {
			return err
		}
		if st.Size != int64(len(data)) {
			if err := unix.Ftruncate(fd, int64(len(data))); err != nil {
				return fmt.Errorf("write %s: truncate: %w", filepath.Join(p.d.path, p.tmp), err)
			}
		}
		// A new swap file was created 0600 (before the umask), as
		// os.CreateTemp does; the target gets exactly perm.
		if os.FileMode(st.Mode).Perm() != perm || st.Mode&(unix.S_ISUID|unix.S_ISGID|unix.S_ISVTX) != 0 {
			if err := unix.Fchmod(fd, uint32(perm)); err != nil {
				return fmt.Errorf("write %s: chmod: %w", filepath.Join(p.d.path, p.tmp), err)
			}
		}
		return nil
	}
	return nil
}

// writeAt writes data to p's file from offset 0.
func (p *pending) writeAt(data []byte) error {
	for off := 0; off < len(data); {
		n, err := unix.Pwrite(p.fd, data[off:], int64(off))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("write %s: %w", filepath.Join(p.d.path, p.tmp), err)
		}
		off += n
	}
	return nil
}

// startSync starts writing p's file back and its fsync in the background.
func (b *Batch) startSync(p *pending) error {
	// Start writing the data back now, without waiting: the fsync
	// goroutine below may get a thread only once the caller blocks (the
	// Go scheduler hands new goroutines to other threads lazily), and
	// then finds the data on its way or written.
	if !testSkip.dataSync {
		unix.SyncFileRange(p.fd, 0, 0, unix.SYNC_FILE_RANGE_WRITE)
	}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		if !testSkip.dataSync {
			// fdatasync: a swap file rewritten in place at its old size
			// has only its times to write besides the data, which
			// nothing reads back; a size that changed is written (see
			// the package comment).
			if err := unix.Fdatasync(p.fd); err != nil {
				p.syncErr = fmt.Errorf("write %s: fdatasync: %w", filepath.Join(p.d.path, p.tmp), err)
			}
		}
		// A swap file stays open, and locked, until Commit has exchanged
		// it (see swapFile).
		if p.swap {
			return
		}
		if err := unix.Close(p.fd); err != nil && p.syncErr == nil {
			p.syncErr = fmt.Errorf("write %s: close: %w", filepath.Join(p.d.path, p.tmp), err)
		}
		p.fd = -1
	}()
	return nil
}

// Commit waits for the batch's data fsyncs, renames every temporary file
// over its target, in order (of two files for one target, the one added
// later ends up there), and fsyncs the directories (at the same time).
// When it returns nil, every file has its new content and that survives a
// crash. On error no temporary file is left behind; files renamed before
// the error keep their new content.
func (b *Batch) Commit() error {
	if b.done {
		return errors.New("durable: batch already committed or aborted")
	}
	b.wg.Wait()
	err := b.err
	for _, p := range b.files {
		if err == nil {
			err = p.syncErr
		}
	}
	if err != nil {
		b.Abort()
		return err
	}
	b.done = true
	defer b.closeDirs()
	for _, p := range b.files {
		if err := p.rename(); err != nil {
			b.removeTemps()
			return fmt.Errorf("write %s: %w", p.dst, &os.LinkError{Op: "rename", Old: filepath.Join(p.d.path, p.tmp), New: p.dst, Err: err})
		}
		p.renamed = true
	}
	b.closeSwaps()
	if testSkip.dirSync {
		return nil
	}
	return each(len(b.dirs), func(i int) error {
		b.dirs[i].closeOld()
		if err := unix.Fsync(b.dirs[i].fd); err != nil {
			return fmt.Errorf("fsync %s: %w", b.dirs[i].path, err)
		}
		return nil
	})
}

// rename puts p's new content at its target: a swap file changes places
// with the target (and keeps the old content for the next time); where
// there is no target yet, or the file system cannot exchange names, it is
// renamed as a temporary file is.
func (p *pending) rename() error {
	if p.swap {
		err := unix.Renameat2(p.d.fd, p.tmp, p.d.fd, p.base, unix.RENAME_EXCHANGE)
		if err != unix.ENOENT && err != unix.EINVAL && err != unix.ENOSYS && err != unix.EOPNOTSUPP {
			return err
		}
	}
	return unix.Renameat(p.d.fd, p.tmp, p.d.fd, p.base)
}

// Abort drops the batch: it waits for the fsyncs started and removes the
// temporary files; no target changes. After Commit it does nothing.
func (b *Batch) Abort() {
	if b.done {
		return
	}
	b.done = true
	b.wg.Wait()
	b.removeTemps()
	b.closeDirs()
}

// closeOld lets go of the replaced files held in d.
func (d *dir) closeOld() {
	for _, fd := range d.olds {
		unix.Close(fd)
	}
	d.olds = nil
}

// closeSwaps lets go of the batch's swap files (and their locks).
func (b *Batch) closeSwaps() {
	for _, p := range b.files {
		if p.swap && p.fd >= 0 {
			unix.Close(p.fd)
			p.fd = -1
		}
	}
}

func (b *Batch) removeTemps() {
	for _, p := range b.files {
		if p.fd >= 0 {
			// Begin failed after creating it, before its fsync started;
			// or a swap file, open until its exchange.
			unix.Close(p.fd)
			p.fd = -1
		}
		// A swap file stays: it is not the target, and its content is
		// overwritten before it next becomes one.
		if p.created && !p.renamed && !p.swap {
			unix.Unlinkat(p.d.fd, p.tmp, 0)
		}
	}
}

func (b *Batch) closeDirs() {
	for _, d := range b.dirs {
		d.closeOld()
		unix.Close(d.fd)
	}
	b.dirs = nil
}

// each runs f(0) … f(n-1) at the same time (each fsync waits for the disk
// in its own thread, so that the waits overlap) and joins their errors.
func each(n int, f func(i int) error) error {
	switch n {
	case 0:
		return nil
	case 1:
		return f(0)
	}
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := 1; i < n; i++ {
		wg.Go(func() { errs[i] = f(i) })
	}
	errs[0] = f(0)
	wg.Wait()
	return errors.Join(errs...)
}

// SyncDir fsyncs a directory, making the renames and unlinks in it durable.
func SyncDir(dir string) error {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("fsync %s: %w", dir, err)
	}
	defer unix.Close(fd)
	if err := unix.Fsync(fd); err != nil {
		return fmt.Errorf("fsync %s: %w", dir, err)
	}
	return nil
}
