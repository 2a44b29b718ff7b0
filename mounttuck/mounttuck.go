// Package mounttuck replaces what is mounted at a path atomically, the way
// systemd's mount_exchange_graceful does: the new tree, built as a detached
// mount, is slid underneath the current top with
// move_mount(MOVE_MOUNT_BENEATH), then the old top is detached
// (MNT_DETACH). Path lookups see the new tree at once; open files, current
// directories and running programs keep the old tree until they let go.
//
// It never overmounts: if the kernel refuses to mount beneath (a namespace
// root, a propagation layout that would shadow the new mount), Switch
// returns an error that says why and leaves the old mount as it was.
package mounttuck

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/mossfs/mossfs/internal/bgclose"
	"golang.org/x/sys/unix"
)

// Result says what Switch did.
type Result struct {
	// Plain is set when nothing was mounted at the target, so the new
	// mount was attached there directly.
	Plain bool
	// OldMountID is the mount id (as in mountinfo) of the top that was
	// replaced (0 when Plain).
	OldMountID uint64
}

// Step names for the test hook, in the order Switch takes them.
const (
	stepBeneath   = "beneath"    // before move_mount(MOVE_MOUNT_BENEATH)
	stepDetachOld = "detach-old" // before unmounting the old top
)

// testHook, when set by a test, runs before each step; an error aborts the
// switch there, as a real failure would.
var testHook func(step string) error

func hook(step string) error {
	if testHook == nil {
		return nil
	}
	return testHook(step)
}

// ErrNamespaceRoot is wrapped in the error for targets that cannot be
// tucked because they are the caller's root or sit directly on the mount
// namespace's root mount (as in an initramfs, whose rootfs is that root).
var ErrNamespaceRoot = errors.New("the target is, or sits directly on, the root of the mount namespace")

// ErrPropagation is wrapped in the error for targets whose propagation
// layout would overmount (shadow) the new mount.
var ErrPropagation = errors.New("shared mount propagation would overmount the new mount")

// Switch makes the detached mount mntFd (from fsmount or
// open_tree(OPEN_TREE_CLONE)) the mount at target. When something is
// mounted there, mntFd goes beneath it and the old top is detached; when
// nothing is, mntFd is attached directly. On any failure before the old top
// is detached, the old mount is left exactly as it was. The caller still
// owns (and should close) mntFd.
func Switch(mntFd int, target string) (Result, error) {
	var res Result
	if !filepath.IsAbs(target) {
		return res, fmt.Errorf("switch %s: target must be an absolute path", target)
	}
	target = filepath.Clean(target)
	st, err := os.Lstat(target)
	if err != nil {
		return res, fmt.Errorf("switch %s: %w", target, err)
	}
	if !st.IsDir() {
		return res, fmt.Errorf("switch %s: target is not a directory", target)
	}
	oldID, _ := mountID(target)
	readable := topIsPassive(target)

	if err := hook(stepBeneath); err != nil {
		return res, fmt.Errorf("switch %s: %w", target, err)
	}
	err = unix.MoveMount(mntFd, "", unix.AT_FDCWD, target,
		unix.MOVE_MOUNT_F_EMPTY_PATH|moveMountBeneath)
	if err != nil {
		if !errors.Is(err, unix.EINVAL) {
			return res, fmt.Errorf("switch %s: move_mount beneath: %w", target, err)
		}
		root, rerr := isMountRoot(target)
		if rerr != nil {
			return res, fmt.Errorf("switch %s: move_mount beneath: %w (and %w)", target, err, rerr)
		}
		if !root {
			// Nothing mounted at target: there is nothing to tuck under.
			if err := unix.MoveMount(mntFd, "", unix.AT_FDCWD, target, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
				return res, fmt.Errorf("switch %s: mount: %w", target, err)
			}
			res.Plain = true
			return res, nil
		}
		return res, diagnose(target, err)
	}
	res.OldMountID = oldID

	// Hold the old top while detaching it, so that tearing it down (the
	// last mntput: superblocks, every dentry and inode cached of the old
	// tree, loop device) is not part of the switch but happens afterwards:
	// the reference goes to a kernel worker (package bgclose), or, where
	// that cannot be, is dropped by a goroutine. Only a descriptor opened
	// for reading can go (io_uring takes no O_PATH files), and that only
	// where opening asks no process (see topIsPassive).
	ref, rerr := -1, error(unix.EBADF)
	if readable {
		ref, rerr = unix.Open(target, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	}
	if rerr != nil {
		ref, rerr = unix.Open(target, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	}
	if rerr == nil {
		defer func() {
			if !bgclose.Release(ref) {
				go unix.Close(ref)
			}
		}()
	}
	err = hook(stepDetachOld)
	if err == nil {
		err = unix.Unmount(target, unix.MNT_DETACH|unix.UMOUNT_NOFOLLOW)
	}
	if err != nil {
		return res, fmt.Errorf("switch %s: the new mount is in place beneath the old one, but detaching the old top failed (both stay stacked; the old one is still visible): %w", target, err)
	}
	return res, nil
}

// moveMountBeneath is MOVE_MOUNT_BENEATH (Linux 6.5), not yet in x/sys.
const moveMountBeneath = 0x200

// isMountRoot reports whether path is the root of a mount.
func isMountRoot(path string) (bool, error) {
	var stx unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, path, unix.AT_SYMLINK_NOFOLLOW|unix.AT_NO_AUTOMOUNT, unix.STATX_BASIC_STATS, &stx); err != nil {
		return false, fmt.Errorf("statx %s: %w", path, err)
	}
	if stx.Attributes_mask&unix.STATX_ATTR_MOUNT_ROOT == 0 {
		// Kernels before 5.8: compare with the parent's device.
		var pst unix.Stat_t
		if err := unix.Stat(filepath.Dir(path), &pst); err != nil {
			return false, err
		}
		return path == "/" || unix.Mkdev(stx.Dev_major, stx.Dev_minor) != pst.Dev, nil
	}
	return stx.Attributes&unix.STATX_ATTR_MOUNT_ROOT != 0, nil
}

// mountID returns the id of the mount on top at path (one statx).
func mountID(path string) (uint64, error) {
	var stx unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, path, unix.AT_SYMLINK_NOFOLLOW|unix.AT_NO_AUTOMOUNT, unix.STATX_MNT_ID, &stx); err != nil {
		return 0, fmt.Errorf("statx %s: %w", path, err)
	}
	if stx.Mask&unix.STATX_MNT_ID == 0 {
		return 0, fmt.Errorf("statx %s: no mount id", path)
	}
	return stx.Mnt_id, nil
}

// topMount returns the mountinfo entry of the mount on top at path.
func topMount(path string) (MountEntry, error) {
	id, err := mountID(path)
	if err != nil {
		return MountEntry{}, err
	}
	mounts, err := ReadMountInfo()
	if err != nil {
		return MountEntry{}, err
	}
	for _, m := range mounts {
		if uint64(m.ID) == id {
			return m, nil
		}
	}
	return MountEntry{}, fmt.Errorf("mount %d of %s not in /proc/self/mountinfo", id, path)
}

// ErrNoBeneath is wrapped in the error when the kernel has no
// MOVE_MOUNT_BENEATH (before Linux 6.5).
var ErrNoBeneath = errors.New("the kernel cannot mount beneath (MOVE_MOUNT_BENEATH, Linux 6.5+)")

// BeneathSupported reports whether the kernel knows MOVE_MOUNT_BENEATH. It
// checks flags before anything else, so an unknown flag gives EINVAL even
// with no valid descriptor, and a known one gets as far as EBADF.
func BeneathSupported() bool {
	err := unix.MoveMount(-1, "", -1, "", unix.MOVE_MOUNT_F_EMPTY_PATH|moveMountBeneath)
	return err != unix.EINVAL
}

// diagnose explains an EINVAL from move_mount beneath a mounted target.
func diagnose(target string, err error) error {
	if !BeneathSupported() {
		return fmt.Errorf("switch %s: %w: the mount there cannot be replaced live; unmount it first (move_mount: %v); the old mount is unchanged", target, ErrNoBeneath, err)
	}
	if target == "/" {
		return diagnoseWith(target, err, MountEntry{}, nil)
	}
	top, terr := topMount(target)
	if terr != nil {
		return fmt.Errorf("switch %s: cannot mount beneath (move_mount: %w), and %w", target, err, terr)
	}
	mounts, _ := ReadMountInfo()
	return diagnoseWith(target, err, top, mounts)
}

// diagnoseWith explains the EINVAL given the top mount at target and the
// mount table.
func diagnoseWith(target string, err error, top MountEntry, mounts []MountEntry) error {
	fail := func(why error, detail string) error {
		return fmt.Errorf("switch %s: cannot mount beneath: %w: %s (move_mount: %v); the old mount is unchanged", target, why, detail, err)
	}
	if target == "/" || top.MountPoint == "/" {
		return fail(ErrNamespaceRoot, "/ cannot be replaced live; mount mossfs on a mount point such as /usr")
	}
	var parent *MountEntry
	for i := range mounts {
		if mounts[i].ID == top.Parent {
			parent = &mounts[i]
		}
	}
	if parent == nil || parent.ID == parent.Parent || top.ID == top.Parent {
		return fail(ErrNamespaceRoot, "its parent mount is the namespace root (in an initramfs: mount a tmpfs first and work beneath it)")
	}
	if pg := parent.Shared(); pg != 0 {
		if top.Shared() == pg || top.Master() == pg {
			return fail(ErrPropagation, fmt.Sprintf("the parent mount %s (shared:%d) propagates to the mount at the target; make it private or a slave first", parent.MountPoint, pg))
		}
	}
	return fmt.Errorf("switch %s: cannot mount beneath the mount %d (%s %s, parent %s): %w; the old mount is unchanged", target, top.ID, top.FSType, top.Source, parent.MountPoint, err)
}
