package erofs

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"strings"
	"syscall"
	"time"

	"github.com/mossfs/mossfs/tree"
)

// The io/fs view of an Image: what an overlayfs mount of the image (with the
// object store as data-only lower layer) shows. Whiteout stubs do not exist,
// xattrs are in the overlay view (see Inode), FileInfo.Sys returns *Inode.
// Symlinks are followed inside the image: absolute targets start at the
// image root and ".." stops there, as in a chroot.

var (
	_ fs.FS         = (*Image)(nil)
	_ fs.ReadDirFS  = (*Image)(nil)
	_ fs.StatFS     = (*Image)(nil)
	_ fs.ReadLinkFS = (*Image)(nil)
)

// Open opens the named file (following symlinks) for reading. The content
// of an external file comes from the object directory given to
// OpenWithObjects; without one, reading it fails with ErrExternal.
func (img *Image) Open(name string) (fs.File, error) {
	ino, err := img.resolve("open", name, true)
	if err != nil {
		return nil, err
	}
	if err := img.fullInode(ino); err != nil {
		return nil, &fs.PathError{Op: "open", Path: name, Err: err}
	}
	f := &file{img: img, name: name, ino: ino}
	if ino.Mode&tree.TypeMask == tree.TypeDir {
		return &dirFile{file: *f}, nil
	}
	return f, nil
}

// Stat returns a FileInfo for the named file, following symlinks.
func (img *Image) Stat(name string) (fs.FileInfo, error) { return img.stat("stat", name, true) }

// Lstat returns a FileInfo for the named file without following a final
// symlink.
func (img *Image) Lstat(name string) (fs.FileInfo, error) { return img.stat("lstat", name, false) }

func (img *Image) stat(op, name string, follow bool) (fs.FileInfo, error) {
	ino, err := img.resolve(op, name, follow)
	if err != nil {
		return nil, err
	}
	if err := img.fullInode(ino); err != nil {
		return nil, &fs.PathError{Op: op, Path: name, Err: err}
	}
	return &fileInfo{name: path.Base(name), ino: ino}, nil
}

// ReadLink returns the target of the named symlink.
func (img *Image) ReadLink(name string) (string, error) {
	ino, err := img.resolve("readlink", name, false)
	if err != nil {
		return "", err
	}
	if ino.Mode&tree.TypeMask != tree.TypeLink {
		return "", &fs.PathError{Op: "readlink", Path: name, Err: fs.ErrInvalid}
	}
	t, err := img.symlinkTarget(ino)
	if err != nil {
		return "", &fs.PathError{Op: "readlink", Path: name, Err: err}
	}
	return t, nil
}

// ReadDir lists the named directory, sorted by name.
func (img *Image) ReadDir(name string) ([]fs.DirEntry, error) {
	ino, err := img.resolve("readdir", name, true)
	if err != nil {
		return nil, err
	}
	ents, err := img.dirEntries(name, ino)
	if err != nil {
		return nil, &fs.PathError{Op: "readdir", Path: name, Err: err}
	}
	return ents, nil
}

func (img *Image) dirEntries(name string, ino *Inode) ([]fs.DirEntry, error) {
	if ino.Mode&tree.TypeMask != tree.TypeDir {
		return nil, syscall.ENOTDIR
	}
	ents, err := img.ReadDirNid(ino.Nid)
	if err != nil {
		return nil, err
	}
	out := make([]fs.DirEntry, len(ents))
	for i, e := range ents {
		out[i] = &dirEntry{img: img, dir: name, ent: e}
	}
	return out, nil
}

// fullInode adds what base leaves out (xattrs, payload, digest, target).
func (img *Image) fullInode(ino *Inode) error {
	full, err := img.Inode(ino.Nid)
	if err != nil {
		return err
	}
	*ino = *full
	return nil
}

// resolve walks name from the root. Intermediate symlinks are always
// followed, the last one only with follow.
func (img *Image) resolve(op, name string, follow bool) (*Inode, error) {
	if !fs.ValidPath(name) {
		return nil, &fs.PathError{Op: op, Path: name, Err: fs.ErrInvalid}
	}
	fail := func(err error) (*Inode, error) {
		if errors.Is(err, fs.ErrNotExist) {
			err = fs.ErrNotExist
		}
		return nil, &fs.PathError{Op: op, Path: name, Err: err}
	}
	root, err := img.base(img.RootNid())
	if err != nil {
		return fail(err)
	}
	stack := []*Inode{root} // the directories walked, for ".."
	var comps []string
	if name != "." {
		comps = strings.Split(name, "/")
	}
	links := 0
	for len(comps) > 0 {
		c := comps[0]
		comps = comps[1:]
		cur := stack[len(stack)-1]
		switch c {
		case "", ".":
			continue
		case "..":
			if len(stack) > 1 {
				stack = stack[:len(stack)-1]
			}
			continue
		}
		if cur.Mode&tree.TypeMask != tree.TypeDir {
			return fail(syscall.ENOTDIR)
		}
		child, err := img.lookup(cur, c)
		if err != nil {
			return fail(err)
		}
		if child.Mode&tree.TypeMask == tree.TypeLink && (follow || len(comps) > 0) {
			links++
			if links > maxSymlinkFollows {
				return fail(syscall.ELOOP)
			}
			target, err := img.symlinkTarget(child)
			if err != nil {
				return fail(err)
			}
			if target == "" {
				return fail(fs.ErrNotExist)
			}
			if strings.HasPrefix(target, "/") {
				stack = stack[:1]
			}
			comps = append(strings.Split(target, "/"), comps...)
			continue
		}
		stack = append(stack, child)
	}
	return stack[len(stack)-1], nil
}

// fileInfo is the fs.FileInfo of an inode; Sys returns the *Inode.
type fileInfo struct {
	name string
	ino  *Inode
}

func (fi *fileInfo) Name() string       { return fi.name }
func (fi *fileInfo) Size() int64        { return clampSize(fi.ino.Size) }
func (fi *fileInfo) Mode() fs.FileMode  { return tree.ModeToFileMode(fi.ino.Mode) }
func (fi *fileInfo) ModTime() time.Time { return time.Unix(fi.ino.Mtime.Sec, int64(fi.ino.Mtime.Nsec)) }
func (fi *fileInfo) IsDir() bool        { return fi.ino.Mode&tree.TypeMask == tree.TypeDir }
func (fi *fileInfo) Sys() any           { return fi.ino }

// dirEntry is an fs.DirEntry; Info reads the inode on demand.
type dirEntry struct {
	img *Image
	dir string
	ent DirEntry
}

func (d *dirEntry) Name() string      { return d.ent.Name }
func (d *dirEntry) IsDir() bool       { return d.ent.Type == tree.TypeDir }
func (d *dirEntry) Type() fs.FileMode { return tree.ModeToFileMode(d.ent.Type).Type() }
func (d *dirEntry) Info() (fs.FileInfo, error) {
	ino, err := d.img.Inode(d.ent.Nid)
	if err != nil {
		return nil, &fs.PathError{Op: "stat", Path: path.Join(d.dir, d.ent.Name), Err: err}
	}
	return &fileInfo{name: d.ent.Name, ino: ino}, nil
}
func (d *dirEntry) String() string { return fs.FormatDirEntry(d) }

// file is an open non-directory.
type file struct {
	img  *Image
	name string
	ino  *Inode
	off  int64
	obj  fs.File // the backing object of an external file, once opened
}

var (
	_ io.ReaderAt = (*file)(nil)
	_ io.Seeker   = (*file)(nil)
)

func (f *file) Stat() (fs.FileInfo, error) {
	return &fileInfo{name: path.Base(f.name), ino: f.ino}, nil
}

func (f *file) Close() error {
	if f.obj != nil {
		return f.obj.Close()
	}
	return nil
}

func (f *file) Read(p []byte) (int, error) {
	n, err := f.ReadAt(p, f.off)
	f.off += int64(n)
	if err == io.EOF && n > 0 && n == len(p) {
		err = nil
	}
	return n, err
}

func (f *file) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += f.off
	case io.SeekEnd:
		offset += clampSize(f.ino.Size)
	default:
		return 0, &fs.PathError{Op: "seek", Path: f.name, Err: fs.ErrInvalid}
	}
	if offset < 0 {
		return 0, &fs.PathError{Op: "seek", Path: f.name, Err: fs.ErrInvalid}
	}
	f.off = offset
	return offset, nil
}

func (f *file) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, &fs.PathError{Op: "read", Path: f.name, Err: fs.ErrInvalid}
	}
	ino := f.ino
	if ino.Mode&tree.TypeMask != tree.TypeReg || ino.Size == 0 {
		return 0, io.EOF
	}
	if ino.layout != LayoutChunkBased {
		n, err := f.img.readAt(ino, p, off)
		if err != nil && err != io.EOF {
			err = &fs.PathError{Op: "read", Path: f.name, Err: err}
		}
		return n, err
	}
	if err := f.openObject(); err != nil {
		return 0, err
	}
	if off >= clampSize(ino.Size) {
		return 0, io.EOF
	}
	short := int64(len(p)) > clampSize(ino.Size)-off
	if short {
		p = p[:clampSize(ino.Size)-off]
	}
	ra, ok := f.obj.(io.ReaderAt)
	if !ok {
		return 0, &fs.PathError{Op: "read", Path: f.name, Err: fmt.Errorf("object %s cannot be read at an offset", ino.Payload)}
	}
	n, err := ra.ReadAt(p, off)
	switch {
	case err == io.EOF && off+int64(n) < clampSize(ino.Size):
		err = &fs.PathError{Op: "read", Path: f.name, Err: fmt.Errorf("object %s is shorter than the file's %d bytes", ino.Payload, ino.Size)}
	case err == nil && short:
		err = io.EOF
	}
	return n, err
}

// openObject opens the backing object of an external file.
func (f *file) openObject() error {
	if f.obj != nil {
		return nil
	}
	ino := f.ino
	switch {
	case ino.Payload == "":
		return &fs.PathError{Op: "read", Path: f.name, Err: fmt.Errorf("%w, but the file has no payload (trusted.overlay.redirect)", ErrExternal)}
	case f.img.objects == nil:
		return &fs.PathError{Op: "read", Path: f.name, Err: fmt.Errorf("%w (payload %s); open the image with OpenWithObjects", ErrExternal, ino.Payload)}
	}
	obj, err := f.img.objects.Open(strings.TrimPrefix(ino.Payload, "/"))
	if err != nil {
		return &fs.PathError{Op: "read", Path: f.name, Err: fmt.Errorf("object %s: %w", ino.Payload, err)}
	}
	f.obj = obj
	return nil
}

// dirFile is an open directory.
type dirFile struct {
	file
	ents []fs.DirEntry
	read bool
	pos  int
}

func (d *dirFile) Read([]byte) (int, error) {
	return 0, &fs.PathError{Op: "read", Path: d.name, Err: syscall.EISDIR}
}

func (d *dirFile) ReadAt([]byte, int64) (int, error) {
	return 0, &fs.PathError{Op: "read", Path: d.name, Err: syscall.EISDIR}
}

func (d *dirFile) ReadDir(n int) ([]fs.DirEntry, error) {
	if !d.read {
		ents, err := d.img.dirEntries(d.name, d.ino)
		if err != nil {
			return nil, &fs.PathError{Op: "readdir", Path: d.name, Err: err}
		}
		d.ents, d.read = ents, true
	}
	rest := d.ents[d.pos:]
	if n <= 0 {
		d.pos = len(d.ents)
		return rest, nil
	}
	if len(rest) == 0 {
		return nil, io.EOF
	}
	rest = rest[:min(n, len(rest))]
	d.pos += len(rest)
	return rest, nil
}
