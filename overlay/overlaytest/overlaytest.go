// Package overlaytest builds transactions for mount tests: a source tree
// whose external files are real objects in an object directory named by
// their fs-verity digest, its EROFS image, and a comparison of a mounted
// tree against its source (type, mode, owner, size, mtime, symlink target,
// xattrs and content of every path).
package overlaytest

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"

	"github.com/mossfs/mossfs/erofs"
	"github.com/mossfs/mossfs/fsverity"
	"github.com/mossfs/mossfs/tree"
	"golang.org/x/sys/unix"
)

// Objects maps an object's payload path (xx/62hex) to its content.
type Objects map[string][]byte

// Tx is a test transaction: its source tree and the objects it needs.
type Tx struct {
	Root    *tree.Node
	Objects Objects
	// Marker is carried by every regular file's content (see MarkerOf).
	Marker string
}

// external makes n an external file with content c, recording the object.
func (tx *Tx) external(n *tree.Node, c []byte) {
	d := fsverity.Sum(c)
	n.Size = uint64(len(c))
	n.Digest = d[:]
	n.Payload = hex.EncodeToString(d[:1]) + "/" + hex.EncodeToString(d[1:])
	tx.Objects[n.Payload] = c
}

// Content returns the content marker-tagged files of a transaction carry:
// every line names the marker, so a reader can tell which transaction a
// whole read came from.
func Content(marker, path string, size int) []byte {
	line := fmt.Sprintf("tx=%s path=%s\n", marker, path)
	var b bytes.Buffer
	for b.Len() < size {
		b.WriteString(line)
	}
	return b.Bytes()[:max(size, len(line))]
}

func node(parent *tree.Node, name string, mode uint32) *tree.Node {
	n := &tree.Node{Name: name, Mode: mode, Nlink: 1,
		Mtime: tree.Timespec{Sec: 1700000000 + int64(len(name))*3600, Nsec: uint32(len(name)) * 1000003}}
	if parent != nil {
		parent.AddChild(n)
	}
	if mode&tree.TypeMask == tree.TypeDir {
		n.Nlink = 2
	}
	return n
}

// Sample returns a transaction exercising every kind of entry: nested
// directories, inline and external files (including empty and multi-block
// ones), setuid and sticky modes, other owners, symlinks, a hardlink, a
// fifo, a character device and xattrs. Every regular file's content names
// marker.
func Sample(marker string) *Tx {
	tx := &Tx{Objects: Objects{}, Marker: marker}
	root := node(nil, "", tree.TypeDir|0o755)
	tx.Root = root
	bin := node(root, "bin", tree.TypeDir|0o755)
	tool := node(bin, "tool", tree.TypeReg|0o755)
	tx.external(tool, Content(marker, "/bin/tool", 5000))
	tool.SetXattr("user.origin", []byte("pkg-"+marker))
	suid := node(bin, "suid", tree.TypeReg|0o4755)
	tx.external(suid, Content(marker, "/bin/suid", 9000))
	etc := node(root, "etc", tree.TypeDir|0o750)
	etc.UID, etc.GID = 1, 2
	etc.SetXattr("user.dir", []byte("etc"))
	conf := node(etc, "conf", tree.TypeReg|0o640)
	conf.UID, conf.GID = 1000, 100
	conf.Content = Content(marker, "/etc/conf", 40)
	conf.Size = uint64(len(conf.Content))
	conf.SetXattr("trusted.mossfs", []byte{0, 1, 2, 255})
	conf.SetXattr("user.empty", []byte{})
	empty := node(etc, "empty", tree.TypeReg|0o600)
	_ = empty
	link := node(etc, "tool-link", tree.TypeLink|0o777)
	link.Target = "../bin/tool"
	abs := node(etc, "abs-link", tree.TypeLink|0o777)
	abs.Target = "/nonexistent/" + marker
	hard := &tree.Node{Name: "tool-hard", LinkTo: tool}
	etc.AddChild(hard)
	tool.Nlink = 2
	dev := node(root, "dev", tree.TypeDir|0o755)
	fifo := node(dev, "fifo", tree.TypeFifo|0o644)
	_ = fifo
	null := node(dev, "null", tree.TypeChar|0o666)
	null.Rdev = uint32(unix.Mkdev(1, 3))
	tmp := node(root, "tmp", tree.TypeDir|0o1777)
	_ = tmp
	deep := root
	for _, d := range []string{"usr", "share", "doc", "pkg"} {
		deep = node(deep, d, tree.TypeDir|0o755)
	}
	big := node(deep, "big", tree.TypeReg|0o644)
	tx.external(big, Content(marker, "/usr/share/doc/pkg/big", 300000))
	txf := node(root, "tx", tree.TypeReg|0o644)
	txf.Content = Content(marker, "/tx", 20)
	txf.Size = uint64(len(txf.Content))
	// A name only this transaction has: directory listings tell them apart.
	own := node(root, "tx-"+marker, tree.TypeReg|0o644)
	own.Content = []byte(marker)
	own.Size = uint64(len(own.Content))
	root.Sort()
	fixNlink(root)
	return tx
}

// fixNlink sets each directory's link count to 2 + its subdirectories.
func fixNlink(root *tree.Node) {
	root.Walk(func(n *tree.Node) error {
		if n.LinkTo == nil && n.IsDir() {
			n.Nlink = 2
			for _, c := range n.Children {
				if c.LinkTo == nil && c.IsDir() {
					n.Nlink++
				}
			}
		}
		return nil
	})
}

// Files returns the paths (relative, no leading slash) of every regular
// file of the tree with the content it must read back.
func (tx *Tx) Files() map[string][]byte {
	out := map[string][]byte{}
	tx.Root.Walk(func(n *tree.Node) error {
		in := n.Inode()
		if in.Type() != tree.TypeReg {
			return nil
		}
		out[strings.TrimPrefix(n.Path(), "/")] = tx.contentOf(in)
		return nil
	})
	return out
}

func (tx *Tx) contentOf(in *tree.Node) []byte {
	if in.Payload != "" {
		return tx.Objects[in.Payload]
	}
	if in.Content == nil {
		return []byte{}
	}
	return in.Content
}

// WriteObjects stores the transaction's objects in dir (xx/62hex).
func (tx *Tx) WriteObjects(t testing.TB, dir string) {
	t.Helper()
	for p, c := range tx.Objects {
		path := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, c, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// ImageBuilder turns a source tree into EROFS image bytes.
type ImageBuilder func(root *tree.Node) ([]byte, error)

// Image builds the composefs image of root with mossfs's writer.
func Image(t testing.TB, root *tree.Node) []byte {
	t.Helper()
	b, err := erofs.BuildImage(root, erofs.DefaultWriteOptions())
	if err != nil {
		t.Fatalf("erofs.BuildImage: %v", err)
	}
	return b
}

// MkfsImage builds an image with the system's mkfs.erofs (an independent
// producer): the tree is written out with the metacopy and redirect xattrs
// a composefs image carries, then packed.
func MkfsImage(t testing.TB, root *tree.Node) []byte {
	t.Helper()
	if _, err := exec.LookPath("mkfs.erofs"); err != nil {
		t.Fatalf("mkfs.erofs not installed (scripts/install-deps.sh): %v", err)
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	if err := materialize(src, root); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(dir, "img")
	out, err := exec.Command("mkfs.erofs", "--quiet", "-x1", img, src).CombinedOutput()
	if err != nil {
		t.Fatalf("mkfs.erofs: %v\n%s", err, out)
	}
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// materialize writes root at dir as an overlay lower layer would hold it.
func materialize(dir string, root *tree.Node) error {
	paths := map[*tree.Node]string{}
	var dirs []*tree.Node
	err := root.Walk(func(n *tree.Node) error {
		p := filepath.Join(dir, n.Path())
		paths[n] = p
		if n.LinkTo != nil {
			return os.Link(paths[n.LinkTo], p)
		}
		var err error
		switch n.Type() {
		case tree.TypeDir:
			err = os.MkdirAll(p, 0o700)
			dirs = append(dirs, n)
		case tree.TypeReg:
			var f *os.File
			f, err = os.Create(p)
			if err == nil {
				if n.Payload != "" {
					err = f.Truncate(int64(n.Size))
				} else {
					_, err = f.Write(n.Content)
				}
				f.Close()
			}
			if err == nil && n.Payload != "" {
				mc := append([]byte{0, 0x24, 0, 1}, n.Digest...)
				err = unix.Lsetxattr(p, "trusted.overlay.metacopy", mc, 0)
				if err == nil {
					err = unix.Lsetxattr(p, "trusted.overlay.redirect", []byte("/"+n.Payload), 0)
				}
			}
		case tree.TypeLink:
			err = os.Symlink(n.Target, p)
		default:
			err = unix.Mknod(p, n.Mode, int(n.Rdev))
		}
		if err != nil {
			return err
		}
		for _, x := range n.Xattrs {
			if err := unix.Lsetxattr(p, x.Name, x.Value, 0); err != nil {
				return fmt.Errorf("%s: %w", x.Name, err)
			}
		}
		if err := os.Lchown(p, int(n.UID), int(n.GID)); err != nil {
			return err
		}
		if n.Type() != tree.TypeLink {
			if err := unix.Fchmodat(unix.AT_FDCWD, p, n.Mode&0o7777, 0); err != nil {
				return err
			}
		}
		if n.Type() != tree.TypeDir {
			return setMtime(p, n.Mtime)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := setMtime(paths[dirs[i]], dirs[i].Mtime); err != nil {
			return err
		}
	}
	return nil
}

func setMtime(p string, m tree.Timespec) error {
	ts := []unix.Timespec{{Sec: m.Sec, Nsec: int64(m.Nsec)}, {Sec: m.Sec, Nsec: int64(m.Nsec)}}
	return unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW)
}

// Compare checks the tree mounted at dir against the source: the same set
// of paths and, for each, type, permission bits, owner, size, mtime, link
// count of non-directories, symlink target, xattrs (those the overlay
// shows: trusted.overlay.* are overlayfs's own) and content. Hardlinks must
// share an inode.
func Compare(t testing.TB, dir string, tx *Tx) {
	t.Helper()
	want := map[string]*tree.Node{}
	tx.Root.Walk(func(n *tree.Node) error {
		want[n.Path()] = n
		return nil
	})
	seen := map[string]bool{}
	inodes := map[*tree.Node]uint64{}
	var errs []string
	fail := func(format string, a ...any) { errs = append(errs, fmt.Sprintf(format, a...)) }
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel := "/" + strings.TrimPrefix(strings.TrimPrefix(p, dir), "/")
		seen[rel] = true
		n, ok := want[rel]
		if !ok {
			fail("%s: in the mount, not in the source", rel)
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		in := n.Inode()
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		if st.Mode != in.Mode {
			fail("%s: mode %o, want %o", rel, st.Mode, in.Mode)
		}
		if st.Uid != in.UID || st.Gid != in.GID {
			fail("%s: owner %d:%d, want %d:%d", rel, st.Uid, st.Gid, in.UID, in.GID)
		}
		if st.Mtim.Sec != in.Mtime.Sec || st.Mtim.Nsec != int64(in.Mtime.Nsec) {
			fail("%s: mtime %d.%09d, want %d.%09d", rel, st.Mtim.Sec, st.Mtim.Nsec, in.Mtime.Sec, in.Mtime.Nsec)
		}
		if !in.IsDir() && uint32(st.Nlink) != in.Nlink {
			fail("%s: nlink %d, want %d", rel, st.Nlink, in.Nlink)
		}
		if ino, ok := inodes[in]; ok && ino != st.Ino {
			fail("%s: inode %d, its hardlink has %d", rel, st.Ino, ino)
		}
		inodes[in] = st.Ino
		switch in.Type() {
		case tree.TypeReg:
			c := tx.contentOf(in)
			if uint64(st.Size) != uint64(len(c)) {
				fail("%s: size %d, want %d", rel, st.Size, len(c))
			}
			got, err := os.ReadFile(p)
			if err != nil {
				fail("%s: read: %v", rel, err)
			} else if !bytes.Equal(got, c) {
				fail("%s: content differs (%d bytes read, %d expected)", rel, len(got), len(c))
			}
		case tree.TypeLink:
			target, err := os.Readlink(p)
			if err != nil || target != in.Target {
				fail("%s: symlink target %q (%v), want %q", rel, target, err, in.Target)
			}
		case tree.TypeChar, tree.TypeBlock:
			if uint32(st.Rdev) != in.Rdev {
				fail("%s: rdev %x, want %x", rel, st.Rdev, in.Rdev)
			}
		}
		got, err := listXattrs(p)
		if err != nil {
			fail("%s: xattrs: %v", rel, err)
		}
		var wantX []string
		for _, x := range in.Xattrs {
			if !strings.HasPrefix(x.Name, "trusted.overlay.") {
				wantX = append(wantX, fmt.Sprintf("%s=%x", x.Name, x.Value))
			}
		}
		if strings.Join(got, " ") != strings.Join(wantX, " ") {
			fail("%s: xattrs %q, want %q", rel, got, wantX)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walking %s: %v", dir, err)
	}
	for p := range want {
		if !seen[p] {
			fail("%s: in the source, missing from the mount", p)
		}
	}
	if len(errs) > 0 {
		sort.Strings(errs)
		if len(errs) > 30 {
			errs = append(errs[:30], fmt.Sprintf("… and %d more", len(errs)-30))
		}
		t.Fatalf("mounted tree %s differs from its source:\n%s", dir, strings.Join(errs, "\n"))
	}
}

// listXattrs returns name=hexvalue of every xattr of p, sorted.
func listXattrs(p string) ([]string, error) {
	sz, err := unix.Llistxattr(p, nil)
	if err != nil {
		if err == syscall.ENOTSUP {
			return nil, nil
		}
		return nil, err
	}
	buf := make([]byte, sz)
	sz, err = unix.Llistxattr(p, buf)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, name := range strings.Split(string(buf[:sz]), "\x00") {
		if name == "" || strings.HasPrefix(name, "trusted.overlay.") {
			continue
		}
		vsz, err := unix.Lgetxattr(p, name, nil)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		v := make([]byte, vsz)
		vsz, err = unix.Lgetxattr(p, name, v)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		out = append(out, fmt.Sprintf("%s=%x", name, v[:vsz]))
	}
	sort.Strings(out)
	return out, nil
}
