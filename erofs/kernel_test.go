package erofs

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/mossfs/mossfs/fsverity"
	"github.com/mossfs/mossfs/internal/testenv"
	"github.com/mossfs/mossfs/tree"
	"golang.org/x/sys/unix"
)

// The kernel is the oracle here: images the writer makes are mounted with
// the kernel's erofs (file-backed) under a read-only overlayfs whose
// data-only lower layer is an object directory, as mossfs mounts them, and
// what the kernel shows is compared with the source tree.

// kernelMount creates a filesystem with the new mount API, attaches it on
// a fresh directory and unmounts it when the test ends.
func kernelMount(t *testing.T, fstype string, config [][2]string) string {
	t.Helper()
	fsfd, err := unix.Fsopen(fstype, unix.FSOPEN_CLOEXEC)
	if err != nil {
		t.Fatalf("fsopen %s: %v", fstype, err)
	}
	defer unix.Close(fsfd)
	for _, kv := range config {
		if kv[1] == "" {
			err = unix.FsconfigSetFlag(fsfd, kv[0])
		} else {
			err = unix.FsconfigSetString(fsfd, kv[0], kv[1])
		}
		if err != nil {
			t.Fatalf("fsconfig %s %s=%s: %v", fstype, kv[0], kv[1], err)
		}
	}
	if err := unix.FsconfigCreate(fsfd); err != nil {
		t.Fatalf("fsconfig create %s %v: %v", fstype, config, err)
	}
	mfd, err := unix.Fsmount(fsfd, unix.FSMOUNT_CLOEXEC, unix.MOUNT_ATTR_RDONLY)
	if err != nil {
		t.Fatalf("fsmount %s: %v", fstype, err)
	}
	defer unix.Close(mfd)
	dir := t.TempDir()
	if err := unix.MoveMount(mfd, "", unix.AT_FDCWD, dir, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		t.Fatalf("move_mount %s on %s: %v", fstype, dir, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

// mountImage mounts img (file-backed erofs) under an overlay with objects
// as its data-only layer and returns the erofs and overlay mount points.
func mountImage(t *testing.T, img []byte, objects string) (erofsDir, overlayDir string) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "image.cfs")
	if err := os.WriteFile(p, img, 0o644); err != nil {
		t.Fatal(err)
	}
	erofsDir = kernelMount(t, "erofs", [][2]string{{"source", p}})
	overlayDir = kernelMount(t, "overlay", [][2]string{
		{"lowerdir+", erofsDir},
		{"datadir+", objects},
		{"metacopy", "on"},
		{"redirect_dir", "on"},
	})
	return erofsDir, overlayDir
}

// overlayXattrs is what the overlay shows of a node's xattrs: the source
// xattrs (escaped ones come back unescaped), plus the markers that keep
// user whiteouts usable in a nested overlay (§9). ACLs are left out: the
// kernel interprets them. The kernel hides user.* xattrs of inodes that
// are neither regular files nor directories.
func overlayXattrs(n *tree.Node, version int) map[string]string {
	m := map[string]string{}
	for _, x := range n.Xattrs {
		if strings.HasPrefix(x.Name, "user.") && !userXattrsVisible(n) {
			continue
		}
		m[x.Name] = string(x.Value)
	}
	switch {
	case isUserWhiteout(n):
		m["trusted.overlay.whiteout"] = ""
		m["user.overlay.whiteout"] = ""
	case n.Mode&tree.TypeMask == tree.TypeDir:
		if slices.ContainsFunc(n.Children, func(c *tree.Node) bool { return c.LinkTo == nil && isUserWhiteout(c) }) {
			m["trusted.overlay.whiteouts"] = ""
			m["user.overlay.whiteouts"] = ""
			if version >= 1 {
				m["trusted.overlay.opaque"] = "x"
				m["user.overlay.opaque"] = "x"
			}
		}
	}
	delete(m, XattrACLAccess)
	delete(m, XattrACLDflt)
	return m
}

func userXattrsVisible(n *tree.Node) bool {
	typ := n.Mode & tree.TypeMask
	return typ == tree.TypeReg || typ == tree.TypeDir || isUserWhiteout(n)
}

func kernelXattrs(t *testing.T, p string, n *tree.Node) map[string]string {
	t.Helper()
	m := map[string]string{}
	buf := make([]byte, 1<<16)
	ln, err := unix.Llistxattr(p, buf)
	if err != nil {
		t.Errorf("listxattr %s: %v", p, err)
		return m
	}
	val := make([]byte, 1<<16)
	for _, name := range strings.Split(strings.TrimRight(string(buf[:ln]), "\x00"), "\x00") {
		if name == "" || name == XattrACLAccess || name == XattrACLDflt {
			continue
		}
		vn, err := unix.Lgetxattr(p, name, val)
		if err == unix.ENODATA && strings.HasPrefix(name, "user.") && !userXattrsVisible(n) {
			continue // listed, but not readable on this file type
		}
		if err != nil {
			t.Errorf("getxattr %s %s: %v", p, name, err)
			continue
		}
		m[name] = string(val[:vn])
	}
	return m
}

// compareKernelView walks the source tree and checks the overlay mount at
// dir against it: lstat (type, permissions, owner, size, mtime, rdev),
// readdir, readlink, xattrs, inline content, external content (objects
// given), hardlinks (same inode). It returns how many entries it checked.
//
// The overlay finds the data of an external file without a redirect
// (Payload "") only in a normal lower layer, never in a data-only one, and
// fails the lookup: those are checked on the erofs mount rawDir instead.
func compareKernelView(t *testing.T, dir, rawDir string, root *tree.Node, version int, external map[*tree.Node][]byte) int {
	t.Helper()
	count := 0
	inoOf := map[*tree.Node]uint64{}
	var links []*tree.Node
	_ = root.Walk(func(n *tree.Node) error {
		count++
		p := filepath.Join(dir, n.Path())
		unreachable := n.Inode().Mode&tree.TypeMask == tree.TypeReg && n.Inode().Size > 0 && n.Inode().Content == nil && n.Inode().Payload == ""
		if unreachable {
			p = filepath.Join(rawDir, n.Path())
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			t.Errorf("lstat %s: %v", n.Path(), err)
			return tree.ErrSkipDir
		}
		if n.LinkTo != nil {
			if !unreachable {
				links = append(links, n)
			}
			inoOf[n] = st.Ino
			return nil
		}
		inoOf[n] = st.Ino
		wantMode := n.Mode & 0xffff
		wantSize := n.Size
		switch n.Mode & tree.TypeMask {
		case tree.TypeChar:
			if n.Rdev == 0 {
				wantMode = tree.TypeReg | n.Mode&0o7777
			}
			wantSize = 0
		case tree.TypeBlock, tree.TypeFifo, tree.TypeSock:
			wantSize = 0
		}
		if st.Mode != wantMode {
			t.Errorf("%s: mode %o, want %o", n.Path(), st.Mode, wantMode)
		}
		if st.Uid != n.UID || st.Gid != n.GID {
			t.Errorf("%s: owner %d:%d, want %d:%d", n.Path(), st.Uid, st.Gid, n.UID, n.GID)
		}
		if st.Mtim.Sec != n.Mtime.Sec || st.Mtim.Nsec != int64(n.Mtime.Nsec) {
			t.Errorf("%s: mtime %d.%09d, want %d.%09d", n.Path(), st.Mtim.Sec, st.Mtim.Nsec, n.Mtime.Sec, n.Mtime.Nsec)
		}
		if n.Mode&tree.TypeMask != tree.TypeDir && uint64(st.Size) != wantSize {
			t.Errorf("%s: size %d, want %d", n.Path(), st.Size, wantSize)
		}
		if typ := n.Mode & tree.TypeMask; (typ == tree.TypeChar && n.Rdev != 0) || typ == tree.TypeBlock {
			if st.Rdev != uint64(n.Rdev) {
				t.Errorf("%s: rdev %#x, want %#x", n.Path(), st.Rdev, n.Rdev)
			}
		}
		if unreachable {
			return nil
		}
		if got, want := kernelXattrs(t, p, n), overlayXattrs(n, version); !equalStringMaps(got, want) {
			t.Errorf("%s: xattrs %q, want %q", n.Path(), got, want)
		}
		switch n.Mode & tree.TypeMask {
		case tree.TypeDir:
			ents, err := os.ReadDir(p)
			if err != nil {
				t.Errorf("readdir %s: %v", n.Path(), err)
				return tree.ErrSkipDir
			}
			var got, want []string
			for _, e := range ents {
				got = append(got, e.Name())
			}
			for _, c := range n.Children {
				want = append(want, c.Name)
			}
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Errorf("%s: readdir %q, want %q", n.Path(), got, want)
			}
		case tree.TypeLink:
			target, err := os.Readlink(p)
			if err != nil || target != n.Target {
				t.Errorf("%s: readlink %q, %v; want %q", n.Path(), target, err, n.Target)
			}
		case tree.TypeReg:
			want, check := n.Content, n.Content != nil
			if c, ok := external[n]; ok {
				want, check = c, true
			}
			if check {
				got, err := os.ReadFile(p)
				if err != nil || !bytes.Equal(got, want) {
					t.Errorf("%s: content (%d bytes, %v) differs from the %d expected", n.Path(), len(got), err, len(want))
				}
			}
		}
		return nil
	})
	for _, l := range links {
		if inoOf[l] != inoOf[l.LinkTo] {
			t.Errorf("%s: hardlink has inode %d, its target %s has %d", l.Path(), inoOf[l], l.LinkTo.Path(), inoOf[l.LinkTo])
		}
	}
	return count
}

func equalStringMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// TestKernelMountAssets mounts the image of every positive asset and
// compares the kernel's view with the parsed dump (metadata only: the
// assets' objects do not exist, and the overlay looks them up lazily).
func TestKernelMountAssets(t *testing.T) {
	testenv.RequireMountNS(t)
	positive, _ := composefsAssets(t)
	for _, a := range positive {
		t.Run(a.name, func(t *testing.T) {
			root := parseAsset(t, a)
			objects := t.TempDir()
			img, err := BuildImage(root, assetWriteOptions(a))
			if err != nil {
				t.Fatal(err)
			}
			raw, ovl := mountImage(t, img, objects)
			n := compareKernelView(t, ovl, raw, root, int(img[12]), nil)
			t.Logf("%d entries checked", n)
		})
	}
}

// TestKernelMountObjects builds a tree with every file type, hardlinks,
// xattrs, a user whiteout, inline files of every size class and external
// files whose objects exist, and reads it all back through the kernel.
func TestKernelMountObjects(t *testing.T) {
	testenv.RequireMountNS(t)
	objects := t.TempDir()
	external := map[*tree.Node][]byte{}
	root := tree.NewDir("", 0o755)
	root.Mtime = tree.Timespec{Sec: 1700000000, Nsec: 5}
	root.Xattrs = []tree.Xattr{{Name: "user.root", Value: []byte("r")}}
	add := func(parent *tree.Node, n *tree.Node) *tree.Node {
		if n.Nlink == 0 {
			n.Nlink = 1
		}
		if n.Mtime == (tree.Timespec{}) {
			n.Mtime = tree.Timespec{Sec: 1700000000 + int64(len(parent.Children)), Nsec: uint32(len(n.Name))}
		}
		parent.AddChild(n)
		return n
	}
	putObject := func(n *tree.Node, data []byte) {
		d := fsverity.Sum(data)
		n.Digest = d[:]
		n.Payload = fmt.Sprintf("%x/%x", d[:1], d[1:])
		n.Size = uint64(len(data))
		p := filepath.Join(objects, n.Payload)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		external[n] = data
	}
	pattern := func(n int, seed byte) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(i*7) ^ seed
		}
		return b
	}
	usr := add(root, tree.NewDir("usr", 0o755))
	bin := add(usr, tree.NewDir("bin", 0o755))
	for i, size := range []int{1, 4095, 4096, 4097, 100000, 3 << 20} {
		f := add(bin, &tree.Node{Name: fmt.Sprintf("ext%d", i), Mode: tree.TypeReg | 0o755, UID: 1000, GID: 1000})
		putObject(f, pattern(size, byte(i)))
	}
	for i, size := range []int{1, 15, 2048, 2049, 4095, 4096, 4097, 5000} {
		add(usr, &tree.Node{Name: fmt.Sprintf("inline%d", i), Mode: tree.TypeReg | 0o644, Size: uint64(size), Content: pattern(size, byte(100+i))})
	}
	add(usr, &tree.Node{Name: "empty", Mode: tree.TypeReg | 0o600})
	shared := add(usr, &tree.Node{Name: "shared", Mode: tree.TypeReg | 0o644, Nlink: 3, Xattrs: []tree.Xattr{{Name: "user.same", Value: []byte("v")}}})
	putObject(shared, []byte("hello world\n"))
	add(bin, &tree.Node{Name: "link-to-shared", LinkTo: shared})
	add(root, &tree.Node{Name: "hard", LinkTo: shared})
	add(usr, &tree.Node{Name: "sym", Mode: tree.TypeLink | 0o777, Target: "bin/ext0", Size: 8})
	long := strings.Repeat("t", 4000)
	add(usr, &tree.Node{Name: "longsym", Mode: tree.TypeLink | 0o777, Target: long, Size: uint64(len(long))})
	dev := add(root, tree.NewDir("dev", 0o755))
	add(dev, &tree.Node{Name: "null", Mode: tree.TypeChar | 0o666, Rdev: 1<<8 | 3})
	add(dev, &tree.Node{Name: "sda", Mode: tree.TypeBlock | 0o660, Rdev: 8 << 8, GID: 6})
	add(dev, &tree.Node{Name: "bigminor", Mode: tree.TypeChar | 0o600, Rdev: 0x12345678})
	add(dev, &tree.Node{Name: "fifo", Mode: tree.TypeFifo | 0o644})
	add(dev, &tree.Node{Name: "sock", Mode: tree.TypeSock | 0o755})
	wh := add(root, tree.NewDir("whiteouts", 0o700))
	add(wh, &tree.Node{Name: "gone", Mode: tree.TypeChar | 0o644})
	add(wh, &tree.Node{Name: "kept", Mode: tree.TypeReg | 0o644, Size: 2, Content: []byte("k\n")})
	odd := add(root, &tree.Node{Name: "odd", Mode: tree.TypeDir | 0o1777, Nlink: 2, UID: 70000, GID: 1 << 31,
		Mtime: tree.Timespec{Sec: -5, Nsec: 999999999},
		Xattrs: []tree.Xattr{
			{Name: "trusted.overlay.opaque", Value: []byte("y")},
			{Name: "trusted.overlay.redirect", Value: []byte("/elsewhere")},
			{Name: "user.overlay.origin", Value: []byte("x")},
			{Name: "user.z", Value: bytes.Repeat([]byte{0, 1, 2}, 300)},
		}})
	add(odd, &tree.Node{Name: "-dash", Mode: tree.TypeReg | 0o4755, Size: 1, Content: []byte("-")})
	add(odd, &tree.Node{Name: "sp ace\nnl", Mode: tree.TypeReg | 0o2755, Size: 1, Content: []byte(" ")})
	add(odd, &tree.Node{Name: strings.Repeat("N", 255), Mode: tree.TypeReg | 0o644})
	big := add(root, tree.NewDir("big", 0o755))
	for i := range 400 {
		f := add(big, &tree.Node{Name: fmt.Sprintf("entry-with-a-longish-name-%04d", i), Mode: tree.TypeReg | 0o644,
			Xattrs: []tree.Xattr{{Name: "security.selinux", Value: []byte("system_u:object_r:usr_t:s0")}}})
		if i%50 == 0 {
			putObject(f, pattern(i+1, byte(i)))
		}
	}
	add(root, &tree.Node{Name: "ab", Mode: tree.TypeReg | 0o644}) // a root name that replaces a stub
	root.Sort()

	before := snapshotTree(root)
	img, err := BuildImage(root, DefaultWriteOptions())
	if err != nil {
		t.Fatal(err)
	}
	if snapshotTree(root) != before {
		t.Fatal("BuildImage modified its input")
	}
	fsckImage(t, "objects tree", img, false)
	erofsDir, ovl := mountImage(t, img, objects)
	n := compareKernelView(t, ovl, erofsDir, root, int(img[12]), external)
	if n < 430 {
		t.Errorf("only %d entries checked", n)
	}

	// The raw erofs mount shows what the overlay hides: the 256 whiteout
	// stubs (less "ab") and the metacopy/redirect xattrs pointing at objects.
	ents, err := os.ReadDir(erofsDir)
	if err != nil {
		t.Fatal(err)
	}
	stubs := 0
	for _, e := range ents {
		if e.Type()&os.ModeCharDevice != 0 && len(e.Name()) == 2 {
			stubs++
		}
	}
	if stubs != 255 {
		t.Errorf("raw erofs root has %d whiteout stubs, want 255", stubs)
	}
	f := bin.Children[0]
	redirect := make([]byte, 256)
	rn, err := unix.Lgetxattr(filepath.Join(erofsDir, f.Path()), XattrRedirect, redirect)
	if err != nil || string(redirect[:rn]) != "/"+f.Payload {
		t.Errorf("%s: raw redirect %q, %v; want /%s", f.Path(), redirect[:max(rn, 0)], err, f.Payload)
	}
	mc := make([]byte, 64)
	mn, err := unix.Lgetxattr(filepath.Join(erofsDir, f.Path()), XattrMetacopy, mc)
	if err != nil || mn != MetacopySize || !bytes.Equal(mc[4:mn], f.Digest) {
		t.Errorf("%s: raw metacopy %x, %v", f.Path(), mc[:max(mn, 0)], err)
	}
	// A missing object is an error when read, not a silent hole.
	if err := os.Remove(filepath.Join(objects, f.Payload)); err != nil {
		t.Fatal(err)
	}
	_, ovl2 := mountImage(t, img, objects)
	if _, err := os.ReadFile(filepath.Join(ovl2, f.Path())); err == nil {
		t.Errorf("%s: reading a file whose object is missing: %v, want an error", f.Path(), err)
	}
}
