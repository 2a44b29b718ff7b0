package overlay

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/mossfs/mossfs/erofs"
	"github.com/mossfs/mossfs/fsverity"
	"github.com/mossfs/mossfs/tree"
	"golang.org/x/sys/unix"
)

// Feature is one kernel capability as a probe found it.
type Feature struct {
	Name string `json:"name"`
	OK   bool   `json:"ok"`
	// Detail says what was found, or why the feature is missing.
	Detail string `json:"detail,omitempty"`
}

// Report is the result of Probe.
type Report struct {
	Kernel string `json:"kernel"`
	// Dir is the directory probed for file-backed EROFS and fs-verity
	// (those depend on the filesystem, not only on the kernel).
	Dir      string    `json:"dir"`
	Features []Feature `json:"features"`
}

// Feature names in a Report.
const (
	FeatNewMountAPI     = "new-mount-api"
	FeatErofsFile       = "erofs-file-backed"
	FeatErofsLoop       = "erofs-loop"
	FeatDataOnlyLowers  = "overlay-data-only-lowers"
	FeatLayerKeys       = "overlay-lowerdir+"
	FeatDetachedLayers  = "overlay-detached-layers"
	FeatOverlayVerity   = "overlay-verity"
	FeatFSVerity        = "fs-verity"
	FeatMountBeneath    = "mount-beneath"
	FeatFUSE            = "fuse"
	FeatFUSEPassthrough = "fuse-passthrough"
)

// Get returns the named feature of the report.
func (r Report) Get(name string) Feature {
	for _, f := range r.Features {
		if f.Name == name {
			return f
		}
	}
	return Feature{Name: name}
}

// Probe tries each kernel feature mossfs can use, as root, without
// touching the caller's mount table: superblocks are created and dropped
// unattached, and what needs attaching happens in a private mount
// namespace on a thread of its own. dir is where test files go; use the
// state root, since file-backed EROFS and fs-verity depend on its filesystem.
func Probe(dir string) Report {
	var rep Report
	var uts unix.Utsname
	if unix.Uname(&uts) == nil {
		rep.Kernel = unix.ByteSliceToString(uts.Release[:])
	}
	rep.Dir = dir
	add := func(name string, err error, ok string) {
		f := Feature{Name: name, OK: err == nil, Detail: ok}
		if err != nil {
			f.Detail = err.Error()
		}
		rep.Features = append(rep.Features, f)
	}
	scratch, err := os.MkdirTemp(dir, ".mossfs-probe-")
	if err != nil {
		add(FeatNewMountAPI, err, "")
		return rep
	}
	defer os.RemoveAll(scratch)

	fsfd, err := unix.Fsopen("tmpfs", unix.FSOPEN_CLOEXEC)
	if err == nil {
		unix.Close(fsfd)
	}
	add(FeatNewMountAPI, err, "fsopen/fsconfig/fsmount/move_mount")

	// EROFS: an empty composefs image, file-backed, then on a loop device.
	img := filepath.Join(scratch, "image")
	data, err := erofs.BuildImage(&tree.Node{Mode: tree.TypeDir | 0o755, Nlink: 2}, erofs.DefaultWriteOptions())
	if err == nil {
		err = os.WriteFile(img, data, 0o644)
	}
	var erofsFd = -1
	if err == nil {
		erofsFd, err = fsmountErofs(img, false)
	}
	if errors.Is(err, unix.ENOTBLK) {
		err = fmt.Errorf("%w: the kernel (before 6.12) or the filesystem of %s cannot back EROFS with a file; a loop device is used", err, dir)
	}
	add(FeatErofsFile, err, "images are mounted without a loop device")
	lfd, _, loopDev, lerr := mountErofsLoopOnly(img)
	add(FeatErofsLoop, lerr, "LOOP_CONFIGURE "+loopDev)
	if erofsFd < 0 {
		erofsFd = lfd
	} else if lfd >= 0 {
		unix.Close(lfd)
	}
	if erofsFd >= 0 {
		defer unix.Close(erofsFd)
	}

	lower := filepath.Join(scratch, "lower")
	data2 := filepath.Join(scratch, "data")
	os.Mkdir(lower, 0o755)
	os.Mkdir(data2, 0o755)
	add(FeatLayerKeys, probeOverlay(func(fd int) error {
		if err := unix.FsconfigSetString(fd, "lowerdir+", lower); err != nil {
			return fmt.Errorf("lowerdir+: %w (Linux 6.7+)", err)
		}
		return unix.FsconfigSetString(fd, "datadir+", data2)
	}), "fsconfig lowerdir+/datadir+")
	dataOnly := probeOverlay(func(fd int) error {
		return unix.FsconfigSetString(fd, "lowerdir", escapeLayer(lower)+"::"+escapeLayer(data2))
	})
	if dataOnly != nil {
		dataOnly = fmt.Errorf("%w (Linux 6.5+)", dataOnly)
	}
	add(FeatDataOnlyLowers, dataOnly, "objects as a data-only lower layer")
	if erofsFd >= 0 {
		add(FeatDetachedLayers, probeOverlay(func(fd int) error {
			if err := unix.FsconfigSetFd(fd, "lowerdir+", erofsFd); err != nil {
				return fmt.Errorf("lowerdir+ by fd: %w (Linux 6.15+)", err)
			}
			return unix.FsconfigSetString(fd, "datadir+", data2)
		}), "the EROFS mount stays detached")
	} else {
		add(FeatDetachedLayers, errors.New("no EROFS mount to try"), "")
	}
	add(FeatOverlayVerity, probeOverlay(func(fd int) error {
		if err := unix.FsconfigSetString(fd, "lowerdir", escapeLayer(lower)+":"+escapeLayer(data2)); err != nil {
			return err
		}
		if err := unix.FsconfigSetString(fd, "metacopy", "on"); err != nil {
			return err
		}
		if err := unix.FsconfigSetString(fd, "verity", "require"); err != nil {
			return fmt.Errorf("verity=require: %w (Linux 6.6+)", err)
		}
		return nil
	}), "verity=require")

	add(FeatFSVerity, probeFSVerity(scratch), "on the filesystem of "+dir)

	var beneathErr, fuseErr, passErr error
	var passDetail string
	nsErr := inPrivateMountNS(func() error {
		beneathErr = probeBeneath(scratch)
		passDetail, fuseErr, passErr = probeFUSE(scratch)
		return nil
	})
	if nsErr != nil {
		beneathErr, fuseErr, passErr = nsErr, nsErr, nsErr
	}
	add(FeatMountBeneath, beneathErr, "MOVE_MOUNT_BENEATH: live switches")
	add(FeatFUSE, fuseErr, "/dev/fuse")
	if fuseErr != nil && passErr == nil {
		passErr = fuseErr
	}
	add(FeatFUSEPassthrough, passErr, passDetail)
	return rep
}

func mountErofsLoopOnly(img string) (int, string, string, error) {
	return mountErofs(img, false, true)
}

// probeOverlay creates (without mounting) an overlay superblock configured by set.
func probeOverlay(set func(fd int) error) error {
	fd, err := unix.Fsopen("overlay", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return fmt.Errorf("fsopen overlay: %w", err)
	}
	defer unix.Close(fd)
	if err := set(fd); err != nil {
		return fsError(fd, "configure", err)
	}
	if err := unix.FsconfigCreate(fd); err != nil {
		return fsError(fd, "create", err)
	}
	return nil
}

func probeFSVerity(dir string) error {
	p := filepath.Join(dir, "verity")
	if err := os.WriteFile(p, []byte("mossfs fs-verity probe\n"), 0o644); err != nil {
		return err
	}
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	return fsverity.Enable(int(f.Fd()))
}

// inPrivateMountNS runs fn on a thread of its own that has left the
// process's mount namespace for a private copy. The thread is never
// returned to the Go scheduler: it exits, with its namespace, when fn ends.
// The main thread is never used: Go keeps a locked main thread alive
// (wedged) instead of ending it, and /proc/self shows its namespace.
func inPrivateMountNS(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if unix.Gettid() == unix.Getpid() {
			// On the main thread: run on another one. While this goroutine
			// holds the main thread, the new one cannot land there.
			errc <- inPrivateMountNS(fn)
			runtime.UnlockOSThread()
			return
		}
		// No Unlock from here on: the thread dies with the goroutine.
		if err := unix.Unshare(unix.CLONE_NEWNS | unix.CLONE_FS); err != nil {
			errc <- fmt.Errorf("private mount namespace: %w", err)
			return
		}
		if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
			errc <- fmt.Errorf("private mount namespace: %w", err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// probeBeneath tucks a tmpfs beneath another and reveals it.
func probeBeneath(scratch string) error {
	base := filepath.Join(scratch, "beneath")
	if err := os.Mkdir(base, 0o755); err != nil {
		return err
	}
	if err := unix.Mount("mossfs-probe", base, "tmpfs", 0, ""); err != nil {
		return err
	}
	defer unix.Unmount(base, unix.MNT_DETACH)
	t := filepath.Join(base, "t")
	os.Mkdir(t, 0o755)
	if err := unix.Mount("mossfs-probe", t, "tmpfs", 0, ""); err != nil {
		return err
	}
	fsfd, err := unix.Fsopen("tmpfs", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return err
	}
	defer unix.Close(fsfd)
	if err := unix.FsconfigCreate(fsfd); err != nil {
		return err
	}
	mfd, err := unix.Fsmount(fsfd, unix.FSMOUNT_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(mfd)
	if err := os.WriteFile(fmt.Sprintf("/proc/self/fd/%d/new", mfd), nil, 0o644); err != nil {
		return err
	}
	if err := unix.MoveMount(mfd, "", unix.AT_FDCWD, t, unix.MOVE_MOUNT_F_EMPTY_PATH|0x200); err != nil {
		return fmt.Errorf("move_mount beneath: %w (Linux 6.5+)", err)
	}
	if err := unix.Unmount(t, unix.MNT_DETACH); err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(t, "new")); err != nil {
		return fmt.Errorf("the mount tucked beneath is not visible after unmounting the top: %w", err)
	}
	return nil
}

// FUSE init flags (include/uapi/linux/fuse.h).
const (
	fuseInit        = 26
	fuseInitExt     = 1 << 30
	fusePassthrough = 1 << (37 - 32) // in flags2
)

// probeFUSE mounts a FUSE file system without a server and reads the
// kernel's INIT request: it lists what the kernel offers, passthrough
// included. Passthrough also needs CAP_SYS_ADMIN in the initial user
// namespace when the server registers backing files.
func probeFUSE(scratch string) (detail string, fuseErr, passErr error) {
	dev, err := unix.Open("/dev/fuse", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return "", fmt.Errorf("/dev/fuse: %w", err), nil
	}
	defer unix.Close(dev)
	mnt := filepath.Join(scratch, "fuse")
	os.Mkdir(mnt, 0o755)
	opts := fmt.Sprintf("fd=%d,rootmode=40000,user_id=0,group_id=0", dev)
	if err := unix.Mount("mossfs-probe", mnt, "fuse.mossfs-probe", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_RDONLY, opts); err != nil {
		return "", fmt.Errorf("mount fuse: %w", err), nil
	}
	defer unix.Unmount(mnt, unix.MNT_DETACH)
	buf := make([]byte, 1<<17)
	var n int
	for range 100 {
		n, err = unix.Read(dev, buf)
		if err != unix.EAGAIN {
			break
		}
		unix.Poll([]unix.PollFd{{Fd: int32(dev), Events: unix.POLLIN}}, 10)
	}
	if err != nil {
		return "", nil, fmt.Errorf("reading FUSE_INIT: %w", err)
	}
	if n < 40+20 || binary.LittleEndian.Uint32(buf[4:]) != fuseInit {
		return "", nil, fmt.Errorf("unexpected first FUSE request (%d bytes)", n)
	}
	in := buf[40:]
	major, minor := binary.LittleEndian.Uint32(in[0:]), binary.LittleEndian.Uint32(in[4:])
	flags, flags2 := binary.LittleEndian.Uint32(in[12:]), binary.LittleEndian.Uint32(in[16:])
	detail = fmt.Sprintf("FUSE protocol %d.%d", major, minor)
	if flags&fuseInitExt == 0 || flags2&fusePassthrough == 0 {
		return detail, nil, fmt.Errorf("%s: the kernel does not offer FUSE_PASSTHROUGH (Linux 6.9+, CONFIG_FUSE_PASSTHROUGH)", detail)
	}
	if !initialUserNS() {
		return detail, nil, fmt.Errorf("%s: offered, but backing files need CAP_SYS_ADMIN in the initial user namespace", detail)
	}
	return detail + " with FUSE_PASSTHROUGH", nil, nil
}

// initialUserNS reports whether the process is root in the initial user namespace.
func initialUserNS() bool {
	if os.Geteuid() != 0 {
		return false
	}
	b, err := os.ReadFile("/proc/self/uid_map")
	if err != nil {
		return false
	}
	f := strings.Fields(string(b))
	return len(f) == 3 && f[0] == "0" && f[1] == "0" && f[2] == "4294967295"
}
