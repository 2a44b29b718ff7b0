package erofs

import (
	"errors"
	"io/fs"
	"testing"
	"testing/fstest"
)

// TestFSGolden runs the io/fs conformance test on the golden images whose
// files can all be opened and read (the bigfile images hold petabyte-sized
// external files without payload; the long-link images hold only dangling
// symlinks, which fstest opens: see TestFSSymlinks).
func TestFSGolden(t *testing.T) {
	expect := map[string][]string{
		"special.dump":                        {"blockdev", "chardev", "escaped-xattr", "fifo", "inline", "inline-large1", "inline-large2", "inline-large3", "whiteout"},
		"special_v1.dump":                     {"inline", "whiteout"},
		"no-newline.dump":                     {"a", "b"},
		"honggfuzz-chardev-nonzero-size.dump": {"chardev"},
	}
	g := rdGoldens(t)
	for name, files := range expect {
		t.Run(name, func(t *testing.T) {
			img := rdOpen(t, g[name])
			if err := fstest.TestFS(img, files...); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestFSView(t *testing.T) {
	img := rdOpen(t, rdGoldens(t)["special_v1.dump"])
	if _, err := fs.Stat(img, "00"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("stub 00: %v", err)
	}
	ents, err := fs.ReadDir(img, ".")
	if err != nil || len(ents) != 9 {
		t.Fatalf("ReadDir: %d entries, %v", len(ents), err)
	}
	b, err := fs.ReadFile(img, "inline")
	if err != nil || string(b) != "FOOBAR\nINAFILE\n" {
		t.Errorf("ReadFile inline: %q %v", b, err)
	}
	fi, err := fs.Stat(img, "blockdev")
	if err != nil {
		t.Fatal(err)
	}
	ino := fi.Sys().(*Inode)
	if ino.Rdev != 107690 || fi.Mode().Type() != fs.ModeDevice || ino.Nid == 0 {
		t.Errorf("blockdev: %v %+v", fi.Mode(), ino)
	}
	if _, err := fs.ReadFile(img, "inline/x"); err == nil {
		t.Error("path through a file resolved")
	}
	for _, bad := range []string{"/inline", "inline/", "../inline", ""} {
		if _, err := img.Open(bad); !errors.Is(err, fs.ErrInvalid) {
			t.Errorf("Open(%q): %v", bad, err)
		}
	}
}

func TestFSSymlinks(t *testing.T) {
	img := rdOpen(t, rdGoldens(t)["longlink.dump"])
	if _, err := fs.Stat(img, "max-link"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("dangling link: %v", err)
	}
	fi, err := fs.Lstat(img, "max-link")
	if err != nil || fi.Mode().Type() != fs.ModeSymlink || fi.Size() != 4095 {
		t.Errorf("Lstat: %v %v", fi, err)
	}
	target, err := fs.ReadLink(img, "max-link")
	if err != nil || len(target) != 4095 {
		t.Errorf("ReadLink: %d bytes, %v", len(target), err)
	}
}

// TestFSExternal checks reading external files: a clear error without an
// object directory, the object's bytes with one.
func TestFSExternal(t *testing.T) {
	img := rdOpen(t, rdGoldens(t)["bigfile.dump"])
	f, err := img.Open("bigfile")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Read(make([]byte, 10)); !errors.Is(err, ErrExternal) {
		t.Errorf("read external file without payload: %v", err)
	}
	if fi, _ := f.Stat(); fi.Size() != 9000000000000000 {
		t.Errorf("size %d", fi.Size())
	}
}
