// Package overlay mounts a mossfs transaction with the kernel's own drivers:
// the transaction's composefs EROFS image (file-backed, or on a loop device
// where the kernel or the backing filesystem cannot do that) under a
// read-only overlayfs whose data-only lower layer is the object store.
//
// The result is a detached mount (a file descriptor from fsmount) that the
// caller attaches where it wants, usually through mounttuck.Switch. The
// intermediate EROFS mount never appears in the mount table: on kernels that
// take a detached mount as an overlay layer (6.15+) it stays detached; on
// older ones it lives for a moment on a temporary directory, attached only
// in the private mount namespace of a short-lived thread, and is detached
// (MNT_DETACH) as soon as the overlay holds it.
//
// Kernel features are chosen by the error the kernel returns, never by its
// version: each older method is tried only after the newer one was refused.
package overlay

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// Verity is the fs-verity policy for the objects of a mount.
type Verity string

const (
	// VerityOff does not check object digests.
	VerityOff Verity = "off"
	// VerityOn checks digests of objects that have fs-verity enabled.
	VerityOn Verity = "on"
	// VerityRequire refuses to read an object without a matching fs-verity digest.
	VerityRequire Verity = "require"
	// VerityAuto is VerityRequire when the store's objects have fs-verity
	// and the kernel's overlayfs can check it, else VerityOff.
	VerityAuto Verity = "auto"
)

// ParseVerity parses a --verity value: require, on, off or auto ("" is auto).
func ParseVerity(s string) (Verity, error) {
	switch v := Verity(s); v {
	case VerityOff, VerityOn, VerityRequire, VerityAuto:
		return v, nil
	case "":
		return VerityAuto, nil
	}
	return "", fmt.Errorf("verity mode %q: want require, on, off or auto", s)
}

// Method is how the overlay was put together, newest first.
type Method string

const (
	// MethodDetachedLayer passes the detached EROFS mount to overlayfs by
	// file descriptor (fsconfig_set_fd "lowerdir+", Linux 6.15+).
	MethodDetachedLayer Method = "detached-layer"
	// MethodLayerKeys uses the "lowerdir+"/"datadir+" keys with paths
	// (Linux 6.7+); the EROFS mount sits on a private temporary directory
	// until the overlay holds it.
	MethodLayerKeys Method = "layer-keys"
	// MethodLegacy uses the legacy "lowerdir=IMAGE::OBJECTS" option string
	// (data-only lower layer, Linux 6.5+).
	MethodLegacy Method = "legacy"
	// MethodLegacyClassic uses "lowerdir=IMAGE:OBJECTS": the objects are an
	// ordinary lower layer (before 6.5); composefs images hide its fan-out
	// directories with a whiteout stub per name.
	MethodLegacyClassic Method = "legacy-classic"
)

// AllMethods is the order in which Mount tries the methods.
var AllMethods = []Method{MethodDetachedLayer, MethodLayerKeys, MethodLegacy, MethodLegacyClassic}

// DefaultSource is the mount source overlays get in /proc/self/mountinfo;
// it is how mossfs recognises its own mounts.
const DefaultSource = "mossfs"

// Options describe one transaction mount.
type Options struct {
	// Image is the path of the composefs EROFS image.
	Image string
	// ObjectsDir is the object store directory (objects at xx/<62 hex>).
	ObjectsDir string
	// Verity is the digest policy ("" is VerityAuto).
	Verity Verity
	// Source is the mount source shown in mountinfo (default DefaultSource).
	Source string
	// Methods restricts and orders the methods tried (default AllMethods);
	// tests use it to exercise the fallbacks on a new kernel.
	Methods []Method
	// NoFileBacked skips the file-backed EROFS mount and goes straight to a
	// loop device (tests of the fallback).
	NoFileBacked bool
	// TempDir holds the temporary private EROFS mount point of the methods
	// that need one (default os.TempDir()).
	TempDir string
	// KeepImageMount leaves the image's detached EROFS mount open for the
	// caller to close, as Info.ImageMount, instead of closing it before
	// Mount returns. Its last close dissolves a detached mount tree, and
	// close(2) returns only after an RCU grace period (the kernel's
	// synchronize_rcu_expedited, whose worker is an ordinary kernel thread
	// that waits for a CPU like any other): 0.1-0.3 ms on an idle machine,
	// 2-28 ms measured with busy threads on every core. A caller can let
	// it run beside other work.
	KeepImageMount bool
}

// Info says how a mount was made.
type Info struct {
	Method Method `json:"method"`
	// ImageBacking is "file" (file-backed EROFS) or "loop".
	ImageBacking string `json:"image_backing"`
	// LoopDevice is the loop device of the image ("" when file-backed).
	LoopDevice string `json:"loop_device,omitempty"`
	// Verity is the effective policy: off, on or require.
	Verity Verity `json:"verity"`
	// ACL reports whether the image was mounted with POSIX ACLs enabled.
	ACL bool `json:"acl"`
	// ImageMount is the image's detached EROFS mount (close-on-exec),
	// left open by Options.KeepImageMount for the caller to close; -1
	// otherwise.
	ImageMount int `json:"-"`
}

// Mount builds the read-only overlay of a transaction and returns it as a
// detached mount: a file descriptor (close-on-exec) for move_mount. The
// caller owns the descriptor; closing it without attaching unmounts it.
func Mount(opts Options) (int, Info, error) {
	info := Info{ImageMount: -1}
	if opts.Image == "" || opts.ObjectsDir == "" {
		return -1, info, errors.New("overlay mount: image and objects directory are required")
	}
	if opts.Source == "" {
		opts.Source = DefaultSource
	}
	methods := opts.Methods
	if len(methods) == 0 {
		methods = AllMethods
	}
	verity := opts.Verity
	if verity == "" {
		verity = VerityAuto
	}
	if _, err := ParseVerity(string(verity)); err != nil {
		return -1, info, err
	}
	st, err := os.Stat(opts.ObjectsDir)
	if err != nil {
		return -1, info, fmt.Errorf("overlay mount: objects directory: %w", err)
	}
	if !st.IsDir() {
		return -1, info, fmt.Errorf("overlay mount: objects directory %s is not a directory", opts.ObjectsDir)
	}
	acl, err := imageHasACL(opts.Image)
	if err != nil {
		return -1, info, err
	}
	info.ACL = acl
	want := verity
	if verity == VerityAuto {
		want = VerityOff
		if objectsHaveVerity(opts.ObjectsDir) {
			want = VerityRequire
		}
	}

	img := &erofsMount{image: opts.Image, acl: acl, noFileBacked: opts.NoFileBacked, fd: -1}
	if _, err := img.detached(); err != nil {
		return -1, info, err
	}
	defer img.close()
	info.ImageBacking, info.LoopDevice = img.backing, img.loopDev

	var errs []error
	for _, m := range methods {
		fd, eff, err := mountOverlay(m, img, opts, want, verity == VerityAuto)
		if err == nil {
			info.Method, info.Verity = m, eff
			if opts.KeepImageMount {
				info.ImageMount, img.fd = img.fd, -1
			}
			return fd, info, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", m, err))
		if !errors.Is(err, errUnsupported) {
			break
		}
	}
	return -1, info, fmt.Errorf("overlay mount of %s over %s: %w", opts.Image, opts.ObjectsDir, errors.Join(errs...))
}

// errUnsupported marks a method the kernel refused as unknown, so that the
// next (older) one is worth trying.
var errUnsupported = errors.New("not supported by this kernel")

// erofsMount is the image's detached EROFS mount, shared by the methods
// tried in turn. A method that had to attach the mount itself (cloning a
// detached mount needs Linux 6.15) uses it up; the next one gets a new one.
type erofsMount struct {
	image            string
	acl              bool
	noFileBacked     bool
	fd               int
	used             bool
	backing, loopDev string
}

// detached returns a detached mount of the image, mounting it if needed.
func (e *erofsMount) detached() (int, error) {
	if e.fd >= 0 && !e.used {
		return e.fd, nil
	}
	e.close()
	fd, backing, loopDev, err := mountErofs(e.image, e.acl, e.noFileBacked)
	if err != nil {
		return -1, err
	}
	e.fd, e.used, e.backing, e.loopDev = fd, false, backing, loopDev
	return fd, nil
}

func (e *erofsMount) close() {
	if e.fd >= 0 {
		unix.Close(e.fd)
		e.fd = -1
	}
}

// composefs header (composefs-format.md): magic, version, flags at byte 8.
const (
	composefsMagic  = 0xd078629a
	composefsHasACL = 1 << 0
)

// imageHasACL reads the composefs header's HAS_ACL flag. Images without a
// composefs header (plain EROFS) count as having ACLs, so nothing is hidden.
func imageHasACL(path string) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, fmt.Errorf("overlay mount: image: %w", err)
	}
	defer f.Close()
	var hdr [12]byte
	if _, err := io.ReadFull(f, hdr[:]); err != nil {
		return false, fmt.Errorf("overlay mount: image %s: reading the header: %w", path, err)
	}
	if binary.LittleEndian.Uint32(hdr[0:]) != composefsMagic {
		return true, nil
	}
	return binary.LittleEndian.Uint32(hdr[8:])&composefsHasACL != 0, nil
}

// objectsHaveVerity reports whether the first object found in the store has
// fs-verity enabled (statx STATX_ATTR_VERITY). Stores are all-or-nothing:
// the cas package enables verity on every object where it can.
//
// It reads the directories only as far as the first object (in directory
// order, not sorted): a switch pays for this on every mount, and a store's
// objects/ holds 256 fan-out directories of many objects each.
func objectsHaveVerity(dir string) bool {
	found := firstObject(dir)
	return found != "" && hasVerity(found)
}

// firstObject returns the path of the first regular file in a two-letter
// directory of dir ("" if none).
func firstObject(dir string) string {
	found := ""
	firstEntry(dir, func(name string, typ byte) bool {
		if typ != unix.DT_DIR || len(name) != 2 {
			return false
		}
		return firstEntry(dir+"/"+name, func(obj string, typ byte) bool {
			if typ != unix.DT_REG {
				return false
			}
			found = dir + "/" + name + "/" + obj
			return true
		})
	})
	return found
}

// firstEntry calls ok for the entries of dir in directory order (name and
// d_type) until it returns true, and reports whether one did. It reads the
// directory 1 KiB at a time with getdents64: os.File.ReadDir asks for 8 KiB,
// which is all of a fan-out directory, and costs more system calls.
func firstEntry(dir string, ok func(name string, typ byte) bool) bool {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	var buf [1024]byte
	for {
		n, err := unix.Getdents(fd, buf[:])
		if err != nil || n <= 0 {
			return false
		}
		// struct linux_dirent64: ino u64, off s64, reclen u16, type u8, name.
		for b := buf[:n]; len(b) >= 19; {
			reclen := int(binary.NativeEndian.Uint16(b[16:]))
			if reclen < 19 || reclen > len(b) {
				return false
			}
			name := b[19:reclen]
			if i := bytes.IndexByte(name, 0); i >= 0 {
				name = name[:i]
			}
			if s := string(name); s != "." && s != ".." && ok(s, b[18]) {
				return true
			}
			b = b[reclen:]
		}
	}
}

func hasVerity(path string) bool {
	var stx unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, path, unix.AT_SYMLINK_NOFOLLOW, unix.STATX_BASIC_STATS, &stx); err != nil {
		return false
	}
	return stx.Attributes_mask&unix.STATX_ATTR_VERITY != 0 && stx.Attributes&unix.STATX_ATTR_VERITY != 0
}

// mountErofs mounts the image detached: file-backed first, a loop device
// when the kernel says the source must be a block device (ENOTBLK; EINVAL on
// some kernels). It returns the fsmount descriptor and how the image is backed.
func mountErofs(image string, acl, noFileBacked bool) (fd int, backing, loopDev string, err error) {
	if !noFileBacked {
		fd, err = fsmountErofs(image, acl)
		if err == nil {
			return fd, "file", "", nil
		}
		if !errors.Is(err, unix.ENOTBLK) && !errors.Is(err, unix.EINVAL) {
			return -1, "", "", err
		}
	}
	dev, lerr := attachLoop(image)
	if lerr != nil {
		if err != nil {
			return -1, "", "", fmt.Errorf("%w; loop fallback: %w", err, lerr)
		}
		return -1, "", "", lerr
	}
	// The loop device clears itself (autoclear) once the last user, the
	// EROFS superblock, goes; our descriptor only has to outlive the mount.
	defer dev.Close()
	fd, lerr = fsmountErofs(dev.Name(), acl)
	if lerr != nil {
		if err != nil {
			return -1, "", "", fmt.Errorf("image %s: file-backed: %w; on loop device: %w", image, err, lerr)
		}
		return -1, "", "", fmt.Errorf("image %s: %w", image, lerr)
	}
	return fd, "loop", dev.Name(), nil
}

func fsmountErofs(source string, acl bool) (int, error) {
	fsfd, err := unix.Fsopen("erofs", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return -1, fmt.Errorf("erofs mount of %s: fsopen: %w", source, err)
	}
	defer unix.Close(fsfd)
	if err := unix.FsconfigSetString(fsfd, "source", source); err != nil {
		return -1, fsError(fsfd, "erofs mount of "+source+": source", err)
	}
	if err := unix.FsconfigSetFlag(fsfd, "ro"); err != nil {
		return -1, fsError(fsfd, "erofs mount of "+source+": ro", err)
	}
	if !acl {
		// A kernel without EROFS ACL support refuses the key; it has no
		// ACLs to hide then, so that is fine.
		if err := unix.FsconfigSetFlag(fsfd, "noacl"); err != nil && !errors.Is(err, unix.EINVAL) {
			return -1, fsError(fsfd, "erofs mount of "+source+": noacl", err)
		}
	}
	if err := unix.FsconfigCreate(fsfd); err != nil {
		return -1, fsError(fsfd, "erofs mount of "+source, err)
	}
	mfd, err := unix.Fsmount(fsfd, unix.FSMOUNT_CLOEXEC, unix.MOUNT_ATTR_RDONLY|unix.MOUNT_ATTR_NODEV)
	if err != nil {
		return -1, fsError(fsfd, "erofs mount of "+source+": fsmount", err)
	}
	return mfd, nil
}

// fsError wraps err with the messages the kernel logged on the fs context
// (read(2) on an fsopen descriptor yields "e overlay: ..." lines).
func fsError(fsfd int, what string, err error) error {
	var msgs []string
	buf := make([]byte, 4096)
	for range 16 {
		n, rerr := unix.Read(fsfd, buf)
		if rerr != nil || n <= 0 {
			break
		}
		msgs = append(msgs, strings.TrimSpace(string(buf[:n])))
	}
	if len(msgs) > 0 {
		return fmt.Errorf("%s: %w (kernel: %s)", what, err, strings.Join(msgs, "; "))
	}
	return fmt.Errorf("%s: %w", what, err)
}

// mountOverlay builds the overlay with one method. It returns errUnsupported
// (wrapped) when the kernel does not know the method, so the caller tries
// the next one.
func mountOverlay(m Method, img *erofsMount, opts Options, verity Verity, auto bool) (int, Verity, error) {
	fd, err := overlayAttempt(m, img, opts, verity)
	if err != nil && auto && verity != VerityOff && errors.Is(err, errVerityUnsupported) {
		// auto: the objects have verity but overlayfs cannot check it.
		verity = VerityOff
		fd, err = overlayAttempt(m, img, opts, verity)
	}
	return fd, verity, err
}

var errVerityUnsupported = errors.New("overlayfs has no verity option (Linux 6.6+)")

// overlayAttempt builds the overlay with method m. The methods that name
// the EROFS layer by path need it attached somewhere for a moment; they run
// on a thread with a private mount namespace of its own, so that mount
// never enters the caller's mount table (nor propagates from it) and
// vanishes with the thread. The overlay itself comes back as a detached
// mount, which belongs to no namespace and can be attached anywhere.
func overlayAttempt(m Method, img *erofsMount, opts Options, verity Verity) (int, error) {
	erofsFd, err := img.detached()
	if err != nil {
		return -1, err
	}
	if m == MethodDetachedLayer {
		return overlayAttemptHere(m, img, erofsFd, opts, verity)
	}
	fd := -1
	nsErr := inPrivateMountNS(func() error {
		fd, err = overlayAttemptHere(m, img, erofsFd, opts, verity)
		return nil
	})
	if nsErr != nil {
		// No private namespace to be had (a restricted container): use a
		// private temporary mount in ours.
		return overlayAttemptHere(m, img, erofsFd, opts, verity)
	}
	return fd, err
}

func overlayAttemptHere(m Method, img *erofsMount, erofsFd int, opts Options, verity Verity) (int, error) {
	fsfd, err := unix.Fsopen("overlay", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return -1, fmt.Errorf("fsopen overlay: %w", err)
	}
	defer unix.Close(fsfd)
	set := func(key, val string) error {
		if err := unix.FsconfigSetString(fsfd, key, val); err != nil {
			return fsError(fsfd, fmt.Sprintf("%s=%s", key, val), err)
		}
		return nil
	}
	if err := set("source", opts.Source); err != nil {
		return -1, err
	}

	var tmp *tempMount
	switch m {
	case MethodDetachedLayer:
		if err := unix.FsconfigSetFd(fsfd, "lowerdir+", erofsFd); err != nil {
			return -1, unsupportedIf(fsError(fsfd, "lowerdir+ (detached mount)", err), unix.EINVAL, unix.EBADF)
		}
		if err := set("datadir+", opts.ObjectsDir); err != nil {
			return -1, unsupportedIf(err, unix.EINVAL)
		}
	case MethodLayerKeys, MethodLegacy, MethodLegacyClassic:
		tmp, err = attachPrivate(img, erofsFd, opts.TempDir)
		if err != nil {
			return -1, err
		}
		defer tmp.detach()
		if testAfterAttach != nil {
			if err := testAfterAttach(m); err != nil {
				return -1, err
			}
		}
		switch m {
		case MethodLayerKeys:
			if err := set("lowerdir+", tmp.dir); err != nil {
				return -1, unsupportedIf(err, unix.EINVAL)
			}
			if err := set("datadir+", opts.ObjectsDir); err != nil {
				return -1, unsupportedIf(err, unix.EINVAL)
			}
		case MethodLegacy:
			if err := set("lowerdir", escapeLayer(tmp.dir)+"::"+escapeLayer(opts.ObjectsDir)); err != nil {
				return -1, unsupportedIf(err, unix.EINVAL)
			}
		case MethodLegacyClassic:
			if err := set("lowerdir", escapeLayer(tmp.dir)+":"+escapeLayer(opts.ObjectsDir)); err != nil {
				return -1, err
			}
		}
	default:
		return -1, fmt.Errorf("unknown overlay method %q", m)
	}
	if err := set("metacopy", "on"); err != nil {
		return -1, err
	}
	if err := set("redirect_dir", "on"); err != nil {
		return -1, err
	}
	if verity != VerityOff {
		if err := set("verity", string(verity)); err != nil {
			if errors.Is(err, unix.EINVAL) {
				return -1, fmt.Errorf("%w: %w", errVerityUnsupported, err)
			}
			return -1, err
		}
	}
	if err := unix.FsconfigCreate(fsfd); err != nil {
		err = fsError(fsfd, "create", err)
		if m == MethodLegacy || m == MethodDetachedLayer {
			// "::" before 6.5, detached layers before 6.15: EINVAL at create.
			err = unsupportedIf(err, unix.EINVAL)
		}
		return -1, err
	}
	mfd, err := unix.Fsmount(fsfd, unix.FSMOUNT_CLOEXEC, unix.MOUNT_ATTR_RDONLY)
	if err != nil {
		return -1, fsError(fsfd, "fsmount", err)
	}
	return mfd, nil
}

func unsupportedIf(err error, errnos ...unix.Errno) error {
	for _, e := range errnos {
		if errors.Is(err, e) {
			return fmt.Errorf("%w: %w", errUnsupported, err)
		}
	}
	return err
}

// escapeLayer escapes a path for overlayfs's legacy lowerdir list.
func escapeLayer(p string) string {
	r := strings.NewReplacer(`\`, `\\`, `:`, `\:`, `,`, `\,`)
	return r.Replace(p)
}

// cloneDetached clones a detached mount (open_tree OPEN_TREE_CLONE); a
// variable so tests can play a kernel before 6.15.
var cloneDetached = func(fd int) (int, error) {
	return unix.OpenTree(fd, "", unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_EMPTY_PATH)
}

// testAfterAttach, when set by a test, can fail a path-based method after
// it attached the image, as a kernel refusing the method would.
var testAfterAttach func(Method) error

// tempMount is the EROFS mount attached on a private temporary directory
// for the methods that name layers by path.
type tempMount struct{ dir string }

func attachPrivate(img *erofsMount, mntFd int, tempDir string) (*tempMount, error) {
	if tempDir == "" {
		tempDir = os.TempDir()
	}
	dir, err := os.MkdirTemp(tempDir, ".mossfs-erofs-")
	if err != nil {
		return nil, fmt.Errorf("temporary image mount point: %w", err)
	}
	// Attach a clone, so the detached original stays usable for the next
	// method if this one is refused. Before Linux 6.15 a detached mount
	// cannot be cloned (EINVAL): attach the original, used up from then on.
	src, err := cloneDetached(mntFd)
	if errors.Is(err, unix.EINVAL) {
		src, err = unix.Dup(mntFd)
		img.used = true
	}
	if err != nil {
		os.Remove(dir)
		return nil, fmt.Errorf("clone the image mount: %w", err)
	}
	defer unix.Close(src)
	if err := unix.MoveMount(src, "", unix.AT_FDCWD, dir, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		os.Remove(dir)
		return nil, fmt.Errorf("attach the image at %s: %w", dir, err)
	}
	// Private at once: nothing mounted on it later propagates, and it is
	// detached again as soon as the overlay holds its own reference.
	if err := unix.Mount("", dir, "", unix.MS_PRIVATE, ""); err != nil {
		t := &tempMount{dir}
		t.detach()
		return nil, fmt.Errorf("make %s private: %w", dir, err)
	}
	return &tempMount{dir}, nil
}

func (t *tempMount) detach() {
	_ = unix.Unmount(t.dir, unix.MNT_DETACH|unix.UMOUNT_NOFOLLOW)
	_ = os.Remove(t.dir)
}

// MountImage mounts a composefs EROFS image read-only, file-backed or on a
// loop device, and returns it as a detached mount (an fsmount descriptor,
// close-on-exec) for the caller to attach, e.g. as a lower layer of a
// writable overlay of its own.
func MountImage(image string) (int, error) {
	acl, err := imageHasACL(image)
	if err != nil {
		return -1, err
	}
	fd, _, _, err := mountErofs(image, acl, false)
	return fd, err
}
