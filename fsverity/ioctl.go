package fsverity

import (
	"errors"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ErrNotSupported is wrapped by Enable and Measure when the kernel (no
// CONFIG_FS_VERITY) or the filesystem (tmpfs, XFS, ext4 without the verity
// feature) has no fs-verity.
var ErrNotSupported = errors.New("fs-verity is not supported by this filesystem or kernel")

// ErrNotEnabled is wrapped by Measure for a file without fs-verity.
var ErrNotEnabled = errors.New("verity not enabled on this file")

// Enable turns on fs-verity for the open file fd (version 1, SHA-256,
// 4096-byte blocks, no salt, no signature), after which the file is
// read-only and its digest is what [Sum] computes for its content. fd must be
// opened read-only and no process may have the file open for writing. A file
// that already has verity enabled is not an error.
func Enable(fd int) error {
	arg := unix.FsverityEnableArg{
		Version:        1,
		Hash_algorithm: unix.FS_VERITY_HASH_ALG_SHA256,
		Block_size:     BlockSize,
	}
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.FS_IOC_ENABLE_VERITY, uintptr(unsafe.Pointer(&arg)))
	switch e {
	case 0, unix.EEXIST:
		return nil
	case unix.EOPNOTSUPP, unix.ENOTTY:
		return fmt.Errorf("enabling fs-verity: %w (%v)", ErrNotSupported, e)
	case unix.ETXTBSY:
		return fmt.Errorf("enabling fs-verity: the file is open for writing (%w)", e)
	case unix.EBADF, unix.EPERM, unix.EACCES:
		return fmt.Errorf("enabling fs-verity: needs a read-only fd of a file the caller may write (%w)", e)
	case unix.EINVAL:
		return fmt.Errorf("enabling fs-verity: parameters rejected (block size 4096 must not exceed the filesystem block size) (%w)", e)
	case unix.EROFS:
		return fmt.Errorf("enabling fs-verity: read-only filesystem (%w)", e)
	case unix.EFBIG:
		return fmt.Errorf("enabling fs-verity: file too large (%w)", e)
	case unix.EINTR:
		return fmt.Errorf("enabling fs-verity: interrupted (%w)", e)
	}
	return fmt.Errorf("enabling fs-verity: %w", e)
}

// Measure returns the fs-verity digest the kernel holds for fd. It fails
// with an error wrapping [ErrNotEnabled] for a file without verity and
// [ErrNotSupported] where the kernel or filesystem lacks fs-verity.
func Measure(fd int) ([Size]byte, error) {
	var d [Size]byte
	// struct fsverity_digest { __u16 digest_algorithm; __u16 digest_size; __u8 digest[]; }
	var buf struct {
		hdr unix.FsverityDigest
		sum [64]byte
	}
	buf.hdr.Size = uint16(len(buf.sum))
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.FS_IOC_MEASURE_VERITY, uintptr(unsafe.Pointer(&buf)))
	switch e {
	case 0:
	case unix.ENODATA:
		return d, fmt.Errorf("measuring fs-verity: %w", ErrNotEnabled)
	case unix.EOPNOTSUPP, unix.ENOTTY:
		return d, fmt.Errorf("measuring fs-verity: %w (%v)", ErrNotSupported, e)
	default:
		return d, fmt.Errorf("measuring fs-verity: %w", e)
	}
	if buf.hdr.Algorithm != unix.FS_VERITY_HASH_ALG_SHA256 || buf.hdr.Size != Size {
		return d, fmt.Errorf("measuring fs-verity: file uses hash algorithm %d (%d-byte digest), not SHA-256",
			buf.hdr.Algorithm, buf.hdr.Size)
	}
	copy(d[:], buf.sum[:Size])
	return d, nil
}
