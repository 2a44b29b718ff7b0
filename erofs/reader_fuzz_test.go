package erofs

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mossfs/mossfs/internal/testenv"
)

// FuzzOpen feeds hostile images to the reader: Open, Tree, the dump
// printer, the nid-level API and a walk of the fs.FS view reading
// everything must end with results or errors, never a panic, a hang or a
// huge allocation. Seeds: the golden images and the images the writer
// builds from the small dumps.
func FuzzOpen(f *testing.F) {
	for _, b := range rdGoldens(f) {
		f.Add(b)
	}
	dir := testenv.SharedPath(f, "testdata", "composefs")
	dumps, _ := filepath.Glob(filepath.Join(dir, "*.dump"))
	for _, p := range dumps {
		if strings.HasPrefix(filepath.Base(p), "should-fail") {
			continue
		}
		src, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		root, err := ParseDump(bytes.NewReader(src), DumpOptions{Name: p})
		if err != nil {
			continue
		}
		if img, err := BuildImage(root, DefaultWriteOptions()); err == nil {
			f.Add(img)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		rdExercise(data)
	})
}

// rdExercise reads everything of an image, ignoring errors.
func rdExercise(data []byte) {
	// Both sources: the block cache over an io.ReaderAt, and in place.
	var img *Image
	var err error
	if len(data)%2 == 0 {
		img, err = Open(bytes.NewReader(data))
	} else {
		img, err = OpenBytes(data, nil)
	}
	if err != nil {
		if !errors.Is(err, ErrCorrupt) {
			panic("Open error does not wrap ErrCorrupt: " + err.Error())
		}
		return
	}
	if root, err := img.Tree(); err == nil {
		_ = WriteDump(io.Discard, root)
	}
	_ = img.WriteDump(io.Discard)

	// The fs.FS view and the nid-level API. A directory may appear under
	// several names of its parent, so the shape can blow up exponentially:
	// bound the total number of entries handled, not the depth.
	budget := 20000
	buf := make([]byte, 4096)
	var walk func(p string)
	walk = func(p string) {
		ents, err := img.ReadDir(p)
		budget -= len(ents) + 1
		if err != nil {
			return
		}
		for _, e := range ents {
			if budget <= 0 {
				return
			}
			budget--
			cp := path.Join(p, e.Name())
			if info, err := e.Info(); err == nil {
				_ = info.Sys().(*Inode)
			}
			if _, err := img.Lstat(cp); err != nil {
				continue
			}
			switch e.Type() {
			case fs.ModeDir:
				walk(cp)
			case fs.ModeSymlink:
				_, _ = img.ReadLink(cp)
				_, _ = img.Stat(cp)
			case 0:
				if f, err := img.Open(cp); err == nil {
					for range 16 {
						if _, err := f.Read(buf); err != nil {
							break
						}
					}
					f.Close()
				}
			}
		}
	}
	walk(".")

	budget = 20000
	queue := []uint64{img.RootNid()}
	for i := 0; i < len(queue) && budget > 0; i++ {
		ino, err := img.Inode(queue[i])
		if err != nil {
			continue
		}
		_, _ = img.ReadAt(ino.Nid, buf, 0)
		ents, err := img.ReadDirNid(ino.Nid)
		budget -= len(ents) + 1
		if err != nil {
			continue
		}
		for _, e := range ents {
			rdCheckAttr(img, e.Nid)
			if _, err := img.Lookup(ino.Nid, e.Name); err == nil && e.Type == 0o040000 {
				queue = append(queue, e.Nid)
			}
		}
	}
}

// rdCheckAttr panics unless Attr fails exactly where Inode fails and
// agrees with it otherwise.
func rdCheckAttr(img *Image, nid uint64) {
	ino, err := img.Inode(nid)
	a, aerr := img.Attr(nid)
	if (err == nil) != (aerr == nil) {
		panic(fmt.Sprintf("inode %d: Inode error %v, Attr error %v", nid, err, aerr))
	}
	if err != nil {
		return
	}
	want := Attr{
		Nid: ino.Nid, Mode: ino.Mode, UID: ino.UID, GID: ino.GID, Nlink: ino.Nlink,
		Size: ino.Size, Mtime: ino.Mtime, Rdev: ino.Rdev,
		HasInline: ino.HasInline, HasPayload: ino.Payload != "",
	}
	if a != want {
		panic(fmt.Sprintf("inode %d: Attr %+v, Inode says %+v", nid, a, want))
	}
}

// TestReaderCorruptions flips bytes of every golden image at a few hundred
// places (all of the header, superblock and first inodes, then spread over
// the rest) and truncates it: errors, never a panic or a hang.
func TestReaderCorruptions(t *testing.T) {
	for _, b := range rdGoldens(t) {
		var offs []int
		for off := 0; off < min(len(b), 1536); off++ {
			if off < 16 || off >= 1024 {
				offs = append(offs, off)
			}
		}
		for off := 1536; off < len(b); off += max(1, len(b)/100) + 1 {
			offs = append(offs, off)
		}
		for i, off := range offs {
			c := bytes.Clone(b)
			c[off] ^= []byte{0xff, 0x80, 0x01, 0x10}[i%4]
			rdExercise(c)
		}
		for _, n := range []int{4096, 4097, len(b) - 1, len(b) / 2} {
			if n > 0 && n < len(b) {
				rdExercise(b[:n])
			}
		}
	}
}
