package fusefs

import (
	"fmt"
	"io"
	"os"

	"github.com/mossfs/mossfs/erofs"
	"golang.org/x/sys/unix"
)

// ImageSource serves a composefs EROFS image through the erofs reader.
type ImageSource struct {
	Img *erofs.Image
}

var _ Source = ImageSource{}

// RootNid implements Source.
func (s ImageSource) RootNid() uint64 { return s.Img.RootNid() }

// Inode implements Source.
func (s ImageSource) Inode(nid uint64) (*Inode, error) {
	in, err := s.Img.Inode(nid)
	if err != nil {
		return nil, err
	}
	return &Inode{
		Nid: in.Nid, Mode: in.Mode, UID: in.UID, GID: in.GID, Nlink: in.Nlink,
		Size: in.Size, Mtime: in.Mtime, Rdev: in.Rdev, Xattrs: in.Xattrs,
		Target: in.Target, Payload: in.Payload, Digest: in.Digest, HasInline: in.HasInline,
	}, nil
}

// Attr implements Source.
func (s ImageSource) Attr(nid uint64) (Attr, error) { return s.Img.Attr(nid) }

// ReadDir implements Source.
func (s ImageSource) ReadDir(nid uint64) ([]Dirent, error) { return s.Img.ReadDirNid(nid) }

// ReadAt implements Source.
func (s ImageSource) ReadAt(nid uint64, p []byte, off int64) (int, error) {
	return s.Img.ReadAt(nid, p, off)
}

// mapping is a read-only memory map of an image file.
type mapping []byte

func (m mapping) Close() error { return unix.Munmap(m) }

// OpenImage opens the image file at path for serving: memory-mapped and
// read in place (the server turns a fault on a truncated file into EIO), or
// read with pread where mapping fails. It returns the source, what closes it, and the
// image's size.
func OpenImage(path string) (Source, io.Closer, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, 0, fmt.Errorf("opening image: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, 0, fmt.Errorf("opening image: %w", err)
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, nil, 0, fmt.Errorf("image %s is not a regular file", path)
	}
	var closer io.Closer = f
	var img *erofs.Image
	if size := st.Size(); size > 0 && size == int64(int(size)) {
		if m, merr := unix.Mmap(int(f.Fd()), 0, int(size), unix.PROT_READ, unix.MAP_SHARED); merr == nil {
			f.Close()
			closer = mapping(m)
			// Records are decoded in place in the mapping: no block
			// cache, no copy of each block into fresh heap memory (on a
			// cold find -ls that was a 4 KiB allocation, its page faults
			// and a copy for every block of inodes listed).
			img, err = erofs.OpenBytes(m, nil)
		}
	}
	if img == nil && err == nil {
		img, err = erofs.Open(f)
	}
	if err != nil {
		closer.Close()
		return nil, nil, 0, fmt.Errorf("image %s: %w", path, err)
	}
	return ImageSource{Img: img}, closer, st.Size(), nil
}
