package main

import (
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/mossfs/mossfs/internal/mountrec"
	"github.com/mossfs/mossfs/internal/state"
	"github.com/mossfs/mossfs/mounttuck"
	"github.com/mossfs/mossfs/overlay"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
)

var mountFlags struct {
	root, driver, verity, objects, image string
	foreground                           bool
}

var mountCmd = &cobra.Command{
	Use:   "mount [flags] TX|sha256:DIGEST|IMAGE TARGET | --image NAME TARGET",
	Short: "Mount a transaction (or an image) read-only at a directory",
	Long: `Mount a transaction read-only at TARGET.

The first argument is a transaction id (all digits), an image in the state
root's store (sha256:<hex>), or the path of an image file, whose objects come
from --objects (default <root>/cas/objects).

The overlay driver mounts the EROFS image under overlayfs with the object
store as a data-only lower layer; the FUSE driver serves the image from a
daemon. auto takes the overlay where the kernel can, FUSE otherwise. If a
mossfs mount is already at TARGET it is replaced atomically, as by switch.

--image NAME mounts a container image pulled with moss-oci (moss-compose
image pull) by its name or id: its root is a container's root filesystem.
Run it with podman as "podman run --rootfs TARGET:O IMAGE-COMMAND": the :O
puts a writable overlay over the read-only mount (plain --rootfs would
write into it), and --rootfs ignores the image's entrypoint and
environment, so give the command (and -e variables) yourself.`,
	Args: func(cmd *cobra.Command, args []string) error {
		if mountFlags.image != "" {
			return cobra.ExactArgs(1)(cmd, args)
		}
		return cobra.ExactArgs(2)(cmd, args)
	},
	RunE: func(cmd *cobra.Command, args []string) error {
		f := mountFlags
		if f.image != "" {
			img, err := containerImageSource(f.root, f.image)
			if err != nil {
				return err
			}
			args = []string{img, args[0]}
		}
		src, err := resolveSource(f.root, args[0], f.objects)
		if err != nil {
			return err
		}
		target, err := absTarget(args[1])
		if err != nil {
			return err
		}
		if f.foreground {
			if f.driver == "overlay" {
				return fmt.Errorf("--foreground serves with the FUSE driver; the overlay needs no process")
			}
			return mountForeground(f.root, src, target)
		}
		unlock, err := mountrec.Lock(f.root)
		if err != nil {
			return err
		}
		defer unlock()
		rec, err := mountAt(f.root, src, target, f.driver, f.verity)
		if err != nil {
			return err
		}
		fmt.Fprintf(cmd.ErrOrStderr(), "mounted %s at %s (%s, verity %s)\n", src.label(), target, rec.Driver, orDash(rec.Verity))
		return nil
	},
}

func init() {
	fl := mountCmd.Flags()
	fl.StringVar(&mountFlags.root, "root", defaultRoot, "state root")
	fl.StringVar(&mountFlags.driver, "driver", "auto", "auto, overlay or fuse")
	fl.StringVar(&mountFlags.verity, "verity", "auto", "object fs-verity checks: require, on, off or auto (require when the objects have fs-verity)")
	fl.StringVar(&mountFlags.objects, "objects", "", "object directory for an image file (default <root>/cas/objects)")
	fl.BoolVar(&mountFlags.foreground, "foreground", false, "serve with the FUSE driver in the foreground until unmounted")
	fl.StringVar(&mountFlags.image, "image", "", "mount the container image with this name or id (records in the state root)")
	addFUSEPassthroughFlag(mountCmd)
	rootCmd.AddCommand(mountCmd)
}

// mountForeground serves src at target with the FUSE driver in this
// process until it is unmounted. The record exists while it serves; the
// switch lock is held only around the changes, not while serving.
func mountForeground(root string, src mountSource, target string) error {
	unlock, err := mountrec.Lock(root)
	if err != nil {
		return err
	}
	if cur, mounted, err := currentMount(target); err != nil || mounted {
		unlock()
		if err != nil {
			return err
		}
		return fmt.Errorf("%s: %s %s is mounted there; --foreground needs an empty target", target, cur.FSType, cur.Source)
	}
	rec := mountrec.Record{Target: target, Tx: src.tx, Image: src.digest, ImagePath: src.image, Objects: src.objects, Driver: "fuse"}
	if src.tx != 0 || src.digest != "" {
		err = mountrec.Write(root, rec)
	}
	unlock()
	if err != nil {
		return err
	}
	serr := mountFUSE(src.image, src.objects, target, true)
	unlock, err = mountrec.Lock(root)
	if err == nil {
		// Only if the target did not get another record meanwhile.
		if r, ok, _ := mountrec.Get(root, target); ok && r.Driver == "fuse" && r.Tx == rec.Tx && r.Image == rec.Image {
			err = mountrec.Remove(root, target)
		}
		unlock()
	}
	return errors.Join(serr, err)
}

// defaultRoot is the state root used without --root.
const defaultRoot = "/.moss"

// mountSource is what to mount: an image and its objects, and the
// transaction it belongs to (0 when an image was named directly).
type mountSource struct {
	tx      uint64
	image   string // path
	digest  string // hex fs-verity digest of the image ("" if unknown)
	objects string
	// checked, if set, is the image opened for a signature check: the
	// overlay mounts it through this descriptor, so the file mounted is the
	// file checked even if the name is replaced meanwhile.
	checked *os.File
}

func (s mountSource) label() string {
	if s.tx != 0 {
		return fmt.Sprintf("transaction %d", s.tx)
	}
	if s.digest != "" {
		return "image sha256:" + s.digest
	}
	return "image " + s.image
}

// resolveSource turns a TX|sha256:DIGEST|IMAGE argument into paths.
func resolveSource(root, arg, objects string) (mountSource, error) {
	switch {
	case isDigits(arg):
		id, err := strconv.ParseUint(arg, 10, 64)
		if err != nil {
			return mountSource{}, fmt.Errorf("transaction id %q: %w", arg, err)
		}
		return transactionSource(root, id)
	case strings.HasPrefix(arg, "sha256:"):
		hexd := strings.TrimPrefix(arg, "sha256:")
		if b, err := hex.DecodeString(hexd); err != nil || len(b) != 32 {
			return mountSource{}, fmt.Errorf("image %q: want sha256: and 64 lowercase hex digits", arg)
		}
		hexd = strings.ToLower(hexd)
		src := mountSource{image: filepath.Join(root, "images", hexd), digest: hexd, objects: objects}
		if src.objects == "" {
			src.objects = storeObjectsDir(root)
		}
		if _, err := os.Stat(src.image); err != nil {
			return mountSource{}, fmt.Errorf("image %s: %w", arg, err)
		}
		return src, nil
	default:
		img, err := filepath.Abs(arg)
		if err != nil {
			return mountSource{}, err
		}
		if st, err := os.Stat(img); err != nil {
			return mountSource{}, fmt.Errorf("image: %w", err)
		} else if !st.Mode().IsRegular() {
			return mountSource{}, fmt.Errorf("image %s: not a regular file", img)
		}
		if objects == "" {
			objects = storeObjectsDir(root)
		}
		return mountSource{image: img, objects: objects}, nil
	}
}

// containerImageSource turns a container image's name or id into the
// sha256:<image> argument of its EROFS image in the store.
func containerImageSource(root, ref string) (string, error) {
	st, err := state.Open(root)
	if err != nil {
		return "", err
	}
	c, err := st.FindContainer(ref)
	if err != nil {
		return "", err
	}
	return "sha256:" + c.Image, nil
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

func absTarget(p string) (string, error) {
	t, err := filepath.Abs(p)
	if err != nil {
		return "", err
	}
	st, err := os.Stat(t)
	if err != nil {
		return "", fmt.Errorf("mount target: %w", err)
	}
	if !st.IsDir() {
		return "", fmt.Errorf("mount target %s: not a directory", t)
	}
	return t, nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// isMossfsMount reports whether a mountinfo entry is one mossfs made: an
// overlay with source "mossfs", or a FUSE mount of type fuse.mossfs.
func isMossfsMount(m mounttuck.MountEntry) bool {
	if m.FSType == "overlay" {
		return m.Source == overlay.DefaultSource
	}
	// The FUSE server mounts with subtype "mossfs" (fstype fuse.mossfs).
	return m.FSType == "fuse.mossfs"
}

// currentMount returns the top mount at target and whether there is one.
func currentMount(target string) (mounttuck.MountEntry, bool, error) {
	return mounttuck.TopAt(target)
}

// mountAt mounts src at target with the driver, replacing a mossfs mount
// already there, and records the mount. The caller holds the mount lock.
func mountAt(root string, src mountSource, target, driver, verity string) (mountrec.Record, error) {
	rec, err := mountOnly(src, target, driver, verity)
	if err != nil {
		return rec, err
	}
	if !recordable(src) {
		// Records name a transaction or a store image (gc and remove read
		// them); an image file from elsewhere replaces any record with nothing.
		return rec, mountrec.Remove(root, target)
	}
	return rec, mountrec.Write(root, rec)
}

// recordable reports whether a mount of src gets a mount record.
func recordable(src mountSource) bool { return src.tx != 0 || src.digest != "" }

// mountOnly is mountAt without the mount record: it returns the record
// for the caller to write.
func mountOnly(src mountSource, target, driver, verity string) (mountrec.Record, error) {
	rec := mountrec.Record{Target: target, Tx: src.tx, Image: src.digest, ImagePath: src.image, Objects: src.objects}
	v, err := overlay.ParseVerity(verity)
	if err != nil {
		return rec, err
	}
	cur, mounted, err := currentMount(target)
	if err != nil {
		return rec, err
	}
	if mounted && !isMossfsMount(cur) {
		return rec, fmt.Errorf("%s: a %s mount (%s) is there that mossfs did not make; refusing to replace it", target, cur.FSType, cur.Source)
	}
	var overlayErr error
	switch driver {
	case "overlay", "auto":
		info, err := mountOverlayAt(src, target, v)
		overlayErr = err
		if err == nil {
			rec.Driver, rec.Verity, rec.Method = "overlay", string(info.Verity), string(info.Method)
			break
		}
		if driver == "overlay" {
			return rec, err
		}
		fmt.Fprintf(os.Stderr, "mossfs: the kernel overlay cannot mount this here (%v); using FUSE\n", err)
		fallthrough
	case "fuse":
		// The FUSE server always checks each object's digest before it first
		// serves it (EIO on mismatch), whatever --verity asks for: that is
		// the integrity it gives, with or without kernel fs-verity.
		rec.Verity = "digest-check"
		if mounted {
			err = switchFUSE(src.image, src.objects, target)
		} else {
			err = mountFUSE(src.image, src.objects, target, false)
		}
		if err != nil {
			if overlayErr != nil {
				return rec, fmt.Errorf("%w; FUSE mount of %s at %s: %w", overlayErr, src.image, target, err)
			}
			return rec, fmt.Errorf("FUSE mount of %s at %s: %w", src.image, target, err)
		}
		rec.Driver = "fuse"
	default:
		return rec, fmt.Errorf("driver %q: want auto, overlay or fuse", driver)
	}
	return rec, nil
}

// mountOverlayAt builds the overlay detached and puts it at target
// (beneath a mossfs mount already there, which is then detached).
func mountOverlayAt(src mountSource, target string, v overlay.Verity) (overlay.Info, error) {
	img := src.image
	if src.checked != nil {
		if p := fmt.Sprintf("/proc/self/fd/%d", src.checked.Fd()); fileIs(p, src.checked) {
			img = p
		}
	}
	fd, info, err := overlay.Mount(overlay.Options{Image: img, ObjectsDir: src.objects, Verity: v, KeepImageMount: true})
	if err != nil {
		return info, err
	}
	defer unix.Close(fd)
	_, err = mounttuck.Switch(fd, target)
	// The image's own detached mount, which the overlay holds, is let go
	// only now and on another thread: its close waits for an RCU grace
	// period (see overlay.Options.KeepImageMount), which runs beside what
	// the caller does next (a switch's commit). Closed in Mount, as it
	// was, that wait came before the move_mount; closed on another thread
	// before Switch, it could make Switch's umount of the old top, which
	// waits for a grace period of its own, wait for two (one that has
	// begun before the call does not count). With 4 readers busy on the 2
	// cores and other load besides, from the start of the mount to the old
	// top detached took 7.7 ms with the close in Mount, 5.0 ms with it
	// here (medians of 150 switches in the same run). Should the process
	// end first, the close is still finished.
	go unix.Close(info.ImageMount)
	return info, err
}

// openState opens the state root (internal/state).
func openState(root string) (*state.State, error) {
	return state.Open(root)
}

// readTx returns the metadata of transaction id.
func readTx(root string, id uint64) (*state.Transaction, error) {
	st, err := openState(root)
	if err != nil {
		return nil, err
	}
	return st.Get(id)
}

func transactionSource(root string, id uint64) (mountSource, error) {
	st, err := openState(root)
	if err != nil {
		return mountSource{}, err
	}
	return stateTransactionSource(st, id)
}

// stateTransactionSource is transactionSource in a state root already open.
func stateTransactionSource(st *state.State, id uint64) (mountSource, error) {
	img, err := st.ImageOf(id)
	if err != nil {
		return mountSource{}, err
	}
	src := mountSource{tx: id, image: st.ImagePath(&state.Transaction{ID: id, Image: img}), digest: img, objects: st.Store().ObjectsDir()}
	if _, err := os.Stat(src.image); err != nil {
		return mountSource{}, fmt.Errorf("transaction %d: image: %w", id, err)
	}
	return src, nil
}

// storeObjectsDir is the object directory of the state root's store.
func storeObjectsDir(root string) string {
	if st, err := openState(root); err == nil {
		return st.Store().ObjectsDir()
	}
	return filepath.Join(root, "cas", "objects")
}

// readActive returns the active transaction (0: none, or no state root).
func readActive(root string) (uint64, error) {
	// "active" is one of the records any user may read.
	st, err := state.OpenRecords(root)
	if err != nil {
		if _, serr := os.Stat(filepath.Join(root, "state.json")); errors.Is(serr, os.ErrNotExist) {
			return 0, nil
		}
		return 0, err
	}
	return st.Active()
}

func setActive(root string, id uint64) error {
	st, err := openState(root)
	if err != nil {
		return err
	}
	return st.SetActive(id)
}

func readID(path string) (uint64, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	id, err := strconv.ParseUint(strings.TrimSpace(string(data)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	return id, nil
}
