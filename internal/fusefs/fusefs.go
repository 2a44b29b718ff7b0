// Package fusefs serves a mossfs transaction through FUSE, where the kernel
// path (EROFS + overlayfs with a data-only lower layer, Linux ≥ 6.5) is
// missing or the user is not root.
//
// What it shows equals what the kernel overlay shows for the same image and
// object directory: st_ino is the EROFS nid (stable across remounts, shared
// by hardlinks), the 256 root stubs and overlay whiteouts are hidden, escaped
// trusted.overlay.overlay.X xattrs show as trusted.overlay.X and the
// overlay's own xattrs (metacopy, redirect, opaque …) not at all.
//
// Metadata comes from the image, read lazily by node number through a
// Source (memory-mapped; a fault on a truncated image answers EIO instead of
// crashing). Content comes from the object directory: each object is checked
// against the digest in the image before its first use (once per mount) and
// a mismatch answers EIO; a missing object is ENOENT, as on the overlay.
//
// Reads take one of two paths. By default the daemon answers OPEN with
// ENOSYS, so the kernel opens files without asking and keeps their page
// cache (FUSE no-open mode); reads that miss the cache arrive without a
// handle and are served from a bounded set of open, checked objects, and
// as root the mount's readahead is raised to 1 MiB. A small file (up to
// 1 MiB) is read once, whole: the bytes that were checked answer the read
// and the rest goes to the page cache unasked (see whole.go), and its first
// read reads and checks the next files of its directory in the background
// and stores them in the page cache the same way (see prefetch.go). In
// that mode an integrity error surfaces on read rather than on open. Directories are opened without OPENDIR requests
// where the kernel allows it. With
// Options.Passthrough, where the kernel allows FUSE passthrough (Linux ≥
// 6.9, root), every open of an external file is answered with the object
// registered as its backing file and reads go straight to the object's page
// cache; registrations are kept across opens.
//
// No-open is the default because an open costs a round trip to the daemon
// in passthrough mode and none in no-open mode: on our 2-core VM that round
// trip is about 100 µs (mostly waking the daemon), which made reading every
// file of a 65k-entry tree 8× slower with passthrough once warm, while
// passthrough only wins on cold sequential reads of large files (about
// 1.4×). See BenchmarkFUSEvsOverlay.
//
// go-fuse answers a lookup of ".go-fuse-epoll-hack" in the root with a fake
// file (it teaches the kernel that the file system does not poll, which a
// Go process reading its own mount needs); nothing lists it.
//
// The kernel caches entries and attributes for a year: an image never
// changes. Switching the tree inside a running daemon (Server.Switch, the
// rootless switch) gives every inode of the new tree new node IDs, so the
// kernel never mixes the trees; it drops its cached entries for the root's
// names and the root's attributes and listing. A process that holds a file,
// directory or cwd of the old tree keeps seeing the old tree through it,
// until it resolves a path from the root again; a path walk that started
// before the switch may finish in the old tree. Mounts on top of paths in
// the old tree are detached by the kernel when their entries are dropped.
// As root, a switch instead mounts a second daemon beneath the first and
// unmounts the top (MOVE_MOUNT_BENEATH), as for the overlay.
//
// A mounted daemon listens on an abstract unix socket named after the
// mount's device number; RequestSwitch and Query talk to it.
package fusefs

import (
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/mossfs/mossfs/internal/heapfloor"
	"github.com/mossfs/mossfs/internal/hugeheap"
	"golang.org/x/sys/unix"
)

// FSType is the file system type of a mossfs FUSE mount in /proc/self/mountinfo.
const FSType = "fuse.mossfs"

// Options describe one FUSE mount.
type Options struct {
	// Image is the EROFS image of the transaction; Objects the object
	// directory its external files point into.
	Image   string
	Objects string
	// Target is the mount point.
	Target string
	// Source, if set, is served instead of opening Image (tests).
	Source Source

	// NoVerify serves objects without checking their digests.
	NoVerify bool
	// Passthrough answers opens of external files with the object as a
	// FUSE passthrough backing file where the kernel allows it (root, Linux
	// ≥ 6.9) instead of using no-open mode: faster cold sequential reads of
	// large files, one daemon round trip per open (see the package doc).
	Passthrough bool
	// Beneath (root only) mounts beneath the mount at Target and then
	// unmounts that top mount, replacing it without a gap.
	Beneath bool
	// Rootless mounts through fusermount3 even when running as root.
	Rootless bool
	// Daemon says that the process does nothing but serve this mount
	// (mossfs fuse-serve): Mount then tunes the Go runtime for it (see
	// tuneRuntime).
	Daemon bool

	Debug  bool
	Logger *log.Logger
}

// Server is a mounted, serving FUSE file system.
type Server struct {
	fs       *fileSystem
	srv      *fuse.Server
	target   string
	dev      uint64
	rootless bool
	// ctlM guards ctl and ended: the control socket is set up after the
	// serve loop has started, and the loop closes it when it ends.
	ctlM     sync.Mutex
	ctl      *controlServer
	ended    bool
	done     chan struct{}
	unmountM sync.Mutex
	closed   bool
}

// Mount mounts opts.Image at opts.Target and starts serving. As root it
// builds the mount with the new mount API (read-only, suid and devices
// allowed, allow_other, permissions checked by the kernel); otherwise, or
// with Rootless, through fusermount3 (nosuid, nodev, only the user).
func Mount(opts Options) (*Server, error) {
	if opts.Target == "" {
		return nil, errors.New("fuse mount: no target")
	}
	g, err := openGeneration(opts.Image, opts.Objects, opts.Source)
	if err != nil {
		return nil, err
	}
	fs := newFileSystem(opts, g)
	s := &Server{fs: fs, target: opts.Target, done: make(chan struct{})}
	mo := &fuse.MountOptions{
		FsName:         fsName(opts.Image),
		Name:           "mossfs",
		MaxWrite:       1 << 20,
		MaxBackground:  64,
		EnableAcl:      true,
		Debug:          opts.Debug,
		Logger:         opts.Logger,
		DisableXAttrs:  false,
		RememberInodes: false,
		// Images never change (a switch gives every inode a new node
		// ID): the kernel keeps a symlink's target in its page cache
		// after the first READLINK (FUSE_CACHE_SYMLINKS).
		EnableSymlinkCaching: true,
	}
	if opts.Beneath && (opts.Rootless || os.Geteuid() != 0) {
		g.close()
		return nil, errors.New("fuse mount: mounting beneath needs root")
	}
	if opts.Rootless || os.Geteuid() != 0 {
		s.rootless = true
		mo.Options = []string{"ro", "default_permissions"}
		srv, err := fuse.NewServer(fs, opts.Target, mo)
		if err != nil {
			g.close()
			return nil, fmt.Errorf("fuse mount at %s: %w", opts.Target, err)
		}
		s.srv = srv
		go s.serve()
		if err := srv.WaitMount(); err != nil {
			s.Unmount()
			return nil, fmt.Errorf("fuse mount at %s: %w", opts.Target, err)
		}
		var st unix.Stat_t
		if err := unix.Stat(opts.Target, &st); err != nil {
			s.Unmount()
			return nil, fmt.Errorf("fuse mount at %s: %w", opts.Target, err)
		}
		s.dev = st.Dev
	} else {
		if err := s.mountAsRoot(opts, mo); err != nil {
			if s.srv == nil {
				g.close()
			} else {
				// The detached mount died with its descriptor; the serve
				// loop ends and closes the image.
				s.closed = true
				select {
				case <-s.done:
				case <-time.After(5 * time.Second):
				}
			}
			return nil, err
		}
	}
	if opts.Daemon {
		tuneOnce.Do(tuneRuntime)
	}
	ctl, err := listenControl(s)
	if err != nil {
		fs.logger.Printf("control socket: %v (switching this mount from outside will not work)", err)
	} else {
		s.ctlM.Lock()
		ended := s.ended
		if !ended {
			s.ctl = ctl
		}
		s.ctlM.Unlock()
		if ended {
			ctl.close() // unmounted already: nothing to control
		}
	}
	return s, nil
}

// tuneRuntime sets up the Go runtime of a daemon that only serves a
// mount, once its server exists.
//
// It doubles GOMAXPROCS. go-fuse keeps up to GOMAXPROCS goroutines blocked
// reading /dev/fuse (it sizes its readers when the server is made), and a
// goroutine blocked in a system call holds its P: with every P held so,
// the runtime's monitor takes Ps back from them every 20 µs and hands them
// to other threads, waking threads (and itself) all the time. With spare
// Ps it leaves them alone. Cold find -ls of the 65k-entry tree: daemon
// context switches 22.5-31k -> 18.4-21.8k, CPU 669-872 -> 650-819 ms; cold
// tar -c | cat: 140-152k -> 120-126k switches, CPU 7.5-8.8 s (interleaved
// pairs under load 7-8).
//
// It lets the heap grow to daemonHeapFloor before the first collection
// (heapfloor), the first daemonHugeHeap of it in huge pages (hugeheap):
// the daemon's heap is mostly the listings it caches, built in new memory
// as the kernel asks. Cold find -ls of the 65k-entry tree: daemon page
// faults 2.1-2.7k -> 0.8-1.5k, five collections -> none, CPU median 392 ->
// 350 ms, RSS 31-34 -> 36-38 MB (6 interleaved pairs under load ~6); cold
// tar -c | cat: faults 27k -> 16k, CPU the same within noise (2 pairs).
func tuneRuntime() {
	runtime.GOMAXPROCS(2 * runtime.GOMAXPROCS(0))
	if heapfloor.Set(daemonHeapFloor) {
		hugeheap.Grow(daemonHugeHeap)
	}
}

// tuneOnce runs tuneRuntime for the first daemon mount of the process
// only: run again (a process serving one mount after another in the
// foreground, as cmd/mossfs's tests do) it would double GOMAXPROCS each
// time, and go-fuse's readers with it (at the 13th, 8,192 readers: the
// unmount took over 30 s to end the serve loop, then the process ran out
// of threads).
var tuneOnce sync.Once

const (
	daemonHeapFloor = 64 << 20
	// daemonHugeHeap is well under the floor: free memory counts against
	// the limit, and the scavenger would give back what is over it.
	daemonHugeHeap = 32 << 20
)

func fsName(image string) string {
	if image == "" {
		return "mossfs"
	}
	return image
}

// mountAsRoot creates a detached FUSE mount, starts serving it, and
// attaches it at the target (or beneath the mount there).
func (s *Server) mountAsRoot(opts Options, mo *fuse.MountOptions) (err error) {
	devFd, err := unix.Open("/dev/fuse", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("fuse mount: %w", err)
	}
	fsFd, err := unix.Fsopen("fuse", unix.FSOPEN_CLOEXEC)
	if err != nil {
		unix.Close(devFd)
		return fmt.Errorf("fuse mount: fsopen: %w", err)
	}
	defer unix.Close(fsFd)
	for _, kv := range [][2]string{
		{"source", fsName(opts.Image)},
		{"subtype", "mossfs"},
		{"fd", fmt.Sprint(devFd)},
		{"rootmode", "40000"},
		{"user_id", "0"},
		{"group_id", "0"},
	} {
		if err := unix.FsconfigSetString(fsFd, kv[0], kv[1]); err != nil {
			unix.Close(devFd)
			return fmt.Errorf("fuse mount: fsconfig %s=%s: %w", kv[0], kv[1], err)
		}
	}
	// "ro" makes the super block read-only, not only the mount: the kernel
	// then never invalidates atime after a passthrough read, which would
	// cost a GETATTR round trip at the next stat of every file read.
	for _, flag := range []string{"ro", "allow_other", "default_permissions"} {
		if err := unix.FsconfigSetFlag(fsFd, flag); err != nil {
			unix.Close(devFd)
			return fmt.Errorf("fuse mount: fsconfig %s: %w", flag, err)
		}
	}
	if err := unix.FsconfigCreate(fsFd); err != nil {
		unix.Close(devFd)
		return fmt.Errorf("fuse mount: creating the file system: %w", err)
	}
	mntFd, err := unix.Fsmount(fsFd, unix.FSMOUNT_CLOEXEC, unix.MOUNT_ATTR_RDONLY)
	if err != nil {
		unix.Close(devFd)
		return fmt.Errorf("fuse mount: fsmount: %w", err)
	}
	defer unix.Close(mntFd)
	// go-fuse serves an already mounted /dev/fuse descriptor given as
	// /dev/fd/N; it owns devFd from here on.
	srv, err := fuse.NewServer(s.fs, fmt.Sprintf("/dev/fd/%d", devFd), mo)
	if err != nil {
		unix.Close(devFd)
		return fmt.Errorf("fuse mount: %w", err)
	}
	s.srv = srv
	go s.serve()
	pollHack(mntFd)
	var st unix.Stat_t
	if err := unix.Fstat(mntFd, &st); err != nil {
		return fmt.Errorf("fuse mount: %w", err)
	}
	s.dev = st.Dev
	if !opts.Passthrough {
		// Reads that miss the page cache go to the daemon; FUSE's default
		// readahead of 128 KiB makes that a round trip per 128 KiB of a
		// cold sequential read (1 MiB measured 25% faster). Best effort.
		ra := fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", unix.Major(st.Dev), unix.Minor(st.Dev))
		_ = os.WriteFile(ra, []byte("1024"), 0)
	}
	flags := unix.MOVE_MOUNT_F_EMPTY_PATH
	if opts.Beneath {
		flags |= moveMountBeneath
	}
	if err := unix.MoveMount(mntFd, "", unix.AT_FDCWD, opts.Target, flags); err != nil {
		what := "attaching at"
		if opts.Beneath {
			what = "mounting beneath"
		}
		return fmt.Errorf("fuse mount: %s %s: %w", what, opts.Target, err)
	}
	if opts.Beneath {
		if err := unix.Unmount(opts.Target, unix.MNT_DETACH|unix.UMOUNT_NOFOLLOW); err != nil {
			return fmt.Errorf("fuse mount: unmounting the old top mount at %s: %w (the new tree is mounted beneath it)", opts.Target, err)
		}
	}
	return nil
}

func (s *Server) serve() {
	s.srv.Serve()
	s.ctlM.Lock()
	s.ended = true
	ctl := s.ctl
	s.ctlM.Unlock()
	if ctl != nil {
		ctl.close()
	}
	s.fs.closeAll()
	close(s.done)
}

// Wait blocks until the file system is unmounted and the last user is gone.
func (s *Server) Wait() { <-s.done }

// Done is closed when the server has stopped.
func (s *Server) Done() <-chan struct{} { return s.done }

// Dev returns the mount's device number (st_dev of its root).
func (s *Server) Dev() uint64 { return s.dev }

// Target returns the mount point.
func (s *Server) Target() string { return s.target }

// Passthrough reports whether reads currently use FUSE passthrough. It is
// decided at the first open of an external file: before that it reports
// whether passthrough will be tried.
func (s *Server) Passthrough() bool { return s.fs.passthrough.Load() }

// Image returns the path of the image being served.
func (s *Server) Image() string { return s.fs.current().image }

// Unmount unmounts the file system if it is still mounted at the target, and
// waits for the server to stop. If the mount is busy it is detached lazily
// and the server keeps serving the remaining users: Unmount then returns at
// once and Wait returns when the last one is gone.
func (s *Server) Unmount() error {
	s.unmountM.Lock()
	defer s.unmountM.Unlock()
	if s.closed {
		return nil
	}
	if !s.mountedAtTarget() {
		// Already unmounted, or replaced by a switch beneath it: nothing of
		// ours is at the target any more.
		s.closed = true
		return nil
	}
	err := unmount(s.target, s.rootless, false)
	if errors.Is(err, syscall.EBUSY) {
		err = unmount(s.target, s.rootless, true)
		if err == nil {
			s.closed = true
			return nil
		}
	}
	if err != nil {
		return err
	}
	s.closed = true
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		return fmt.Errorf("fuse unmount %s: the kernel did not end the connection", s.target)
	}
	return nil
}

func (s *Server) mountedAtTarget() bool {
	var st unix.Stat_t
	if err := unix.Stat(s.target, &st); err != nil {
		return false
	}
	return st.Dev == s.dev
}

// Unmount unmounts the mossfs FUSE mount at target: umount2 as root,
// fusermount3 -u otherwise. lazy detaches a busy mount.
func Unmount(target string, lazy bool) error {
	return unmount(target, os.Geteuid() != 0, lazy)
}

func unmount(target string, rootless, lazy bool) error {
	if !rootless {
		flags := unix.UMOUNT_NOFOLLOW
		if lazy {
			flags |= unix.MNT_DETACH
		}
		if err := unix.Unmount(target, flags); err != nil {
			return fmt.Errorf("unmounting %s: %w", target, err)
		}
		return nil
	}
	args := []string{"-u"}
	if lazy {
		args = append(args, "-z")
	}
	bin := "fusermount3"
	if _, err := lookPath(bin); err != nil {
		bin = "fusermount"
	}
	out, err := execCommand(bin, append(args, target)...).CombinedOutput()
	if err != nil {
		msg := strings.TrimSpace(string(out))
		if strings.Contains(msg, "busy") {
			return fmt.Errorf("unmounting %s: %s: %w", target, msg, syscall.EBUSY)
		}
		return fmt.Errorf("unmounting %s: %s: %w", target, msg, err)
	}
	return nil
}

// Switch replaces the served tree by the image at image (objects: its
// object directory, "" to keep the current one) inside this daemon. See the
// package documentation for what readers see meanwhile.
func (s *Server) Switch(image, objects string) error {
	if objects == "" {
		objects = s.fs.current().objects
	}
	g, err := openGeneration(image, objects, nil)
	if err != nil {
		return err
	}
	s.fs.switchTo(g)
	return nil
}

// SwitchSource is Switch with a Source instead of an image (tests).
func (s *Server) SwitchSource(src Source, objects string) error {
	g, err := openGeneration("", objects, src)
	if err != nil {
		return err
	}
	s.fs.switchTo(g)
	return nil
}

// switchTo makes g the served tree and invalidates the kernel's entries of
// the old root.
func (f *fileSystem) switchTo(g *generation) {
	f.switchM.Lock()
	t := f.tab.Load()
	old := t.cur
	g.id = f.nextGen
	f.nextGen++
	nt := &table{cur: g, byID: make(map[uint64]*generation, len(t.byID)+1)}
	for id, og := range t.byID {
		nt.byID[id] = og
	}
	nt.byID[g.id] = g
	f.tab.Store(nt)
	f.switchM.Unlock()

	var names []string
	if ents, st := old.readDir(f, old.src.RootNid()); st.Ok() {
		for _, e := range ents {
			names = append(names, e.Name)
		}
	}
	f.invalidateRoot(names)
	// A lookup that resolved in the old tree just before the swap may
	// reach the kernel after the invalidation: drop its names once more.
	go func() {
		time.Sleep(100 * time.Millisecond)
		f.invalidateRoot(names)
	}()
	if old.refs.Load() <= 0 {
		f.maybeRelease(old)
	}
}

func (f *fileSystem) invalidateRoot(names []string) {
	if f.server == nil {
		return
	}
	f.server.InodeNotify(fuse.FUSE_ROOT_ID, 0, 0)
	for _, n := range names {
		f.server.EntryNotify(fuse.FUSE_ROOT_ID, n)
	}
}

// closeAll closes every generation once the server has stopped.
func (f *fileSystem) closeAll() {
	f.switchM.Lock()
	defer f.switchM.Unlock()
	t := f.tab.Load()
	for _, g := range t.byID {
		g.close()
	}
	f.handlesM.Lock()
	for fh, h := range f.handles {
		if h.file != nil {
			h.file.Close()
		}
		delete(f.handles, fh)
	}
	f.handlesM.Unlock()
	all := func(uint64) bool { return true }
	f.objs.removeWhere(all)
	// The connection is gone, and with it the kernel's registrations.
	f.connGone.Store(true)
	f.backing.removeWhere(all)
}

func (g *generation) close() {
	if g.closer != nil {
		g.closer.Close()
		g.closer = nil
	}
}

// openGeneration opens an image (or wraps src) for serving.
func openGeneration(image, objects string, src Source) (*generation, error) {
	g := &generation{image: image, objects: objects}
	if g.image == "" {
		g.image = "(in-memory tree)"
	}
	if src != nil {
		g.src = src
		if c, ok := src.(io.Closer); ok {
			g.closer = c
		}
		return g, nil
	}
	s, closer, size, err := OpenImage(image)
	if err != nil {
		return nil, err
	}
	g.src, g.closer, g.blocks = s, closer, uint64(size+4095)/4096
	return g, nil
}

// moveMountBeneath is MOVE_MOUNT_BENEATH (Linux 6.5), missing from x/sys.
const moveMountBeneath = 0x200

// pollHack makes the kernel learn that this file system does not support
// poll, before anyone uses it. Go registers every file it opens with epoll
// from inside the runtime; on a FUSE file that sends a POLL request, and a
// process serving its own mount then deadlocks the garbage collector
// against that request. go-fuse answers POLL on its magic file with ENOSYS,
// after which the kernel stops asking (what go-fuse's WaitMount does for
// mounts it makes itself).
func pollHack(mntFd int) {
	fd, err := unix.Openat(mntFd, ".go-fuse-epoll-hack", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return
	}
	_, _ = unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN | unix.POLLPRI | unix.POLLOUT}}, 0)
	unix.Close(fd)
}
