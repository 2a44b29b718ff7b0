package erofs

import (
	"bytes"
	"encoding/hex"
	"io"
	"io/fs"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/mossfs/mossfs/internal/gentree"
	"github.com/mossfs/mossfs/internal/testenv"
	"github.com/mossfs/mossfs/tree"
	"golang.org/x/sys/unix"
)

// The kernel is the oracle of the overlay view: an image is mounted as
// mossfs mounts it (file-backed erofs under a read-only overlayfs whose
// data-only layer is the object directory), and every entry of the reader's
// fs.FS view, with its Inode, is compared with what the kernel shows:
// directory listings (no whiteout stubs), lstat fields, symlink targets,
// xattrs, and file content (inline and from objects).

// rdMountOverlay mounts image as mossfs does (see mountImage) and returns
// the overlay.
func rdMountOverlay(t *testing.T, image []byte, objects string) string {
	t.Helper()
	_, overlay := mountImage(t, image, objects)
	return overlay
}

func rdKernelXattrs(t *testing.T, p string) map[string]string {
	t.Helper()
	buf := make([]byte, 1<<16)
	n, err := unix.Llistxattr(p, buf)
	if err != nil {
		t.Fatalf("llistxattr %s: %v", p, err)
	}
	m := map[string]string{}
	for name := range strings.SplitSeq(string(buf[:n]), "\x00") {
		if name == "" {
			continue
		}
		v := make([]byte, 1<<16)
		vn, err := unix.Lgetxattr(p, name, v)
		if err != nil {
			// The VFS refuses user.* on inodes other than files and dirs.
			continue
		}
		m[name] = string(v[:vn])
	}
	return m
}

// rdCompareKernel walks the reader's fs.FS view and the mount side by side.
// readContent: also compare file content (needs every object present).
func rdCompareKernel(t *testing.T, img *Image, mnt string, readContent bool) int {
	t.Helper()
	count := 0
	var walk func(rel string)
	walk = func(rel string) {
		kp := filepath.Join(mnt, rel)
		ents, err := img.ReadDir(rel)
		if err != nil {
			t.Fatalf("ReadDir %s: %v", rel, err)
		}
		kents, err := os.ReadDir(kp)
		if err != nil {
			t.Fatalf("kernel readdir %s: %v", kp, err)
		}
		var names, knames []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		for _, e := range kents {
			knames = append(knames, e.Name())
		}
		if !slices.Equal(names, knames) {
			t.Errorf("%s: entries %q, kernel %q", rel, names, knames)
			return
		}
		for _, p := range append([]string{rel}, rdNames(rel, ents)...) {
			if p == rel && rel != "." {
				continue // compared as its parent's entry
			}
			count++
			kp := filepath.Join(mnt, p)
			fi, err := img.Lstat(p)
			if err != nil {
				t.Fatalf("Lstat %s: %v", p, err)
			}
			ino := fi.Sys().(*Inode)
			var st unix.Stat_t
			if err := unix.Lstat(kp, &st); err != nil {
				t.Fatalf("kernel lstat %s: %v", kp, err)
			}
			if st.Mode != ino.Mode || st.Uid != ino.UID || st.Gid != ino.GID || uint64(st.Size) != ino.Size ||
				st.Mtim.Sec != ino.Mtime.Sec || uint32(st.Mtim.Nsec) != ino.Mtime.Nsec || uint32(st.Nlink) != ino.Nlink ||
				st.Rdev != uint64(ino.Rdev) {
				t.Errorf("%s: mode %o uid %d gid %d size %d mtime %v nlink %d rdev %d; kernel %o %d %d %d %d.%d %d %d", p,
					ino.Mode, ino.UID, ino.GID, ino.Size, ino.Mtime, ino.Nlink, ino.Rdev,
					st.Mode, st.Uid, st.Gid, st.Size, st.Mtim.Sec, st.Mtim.Nsec, st.Nlink, st.Rdev)
			}
			mine := map[string]string{}
			for _, x := range ino.Xattrs {
				mine[x.Name] = string(x.Value)
			}
			if typ := ino.Mode & tree.TypeMask; typ != tree.TypeReg && typ != tree.TypeDir {
				maps.DeleteFunc(mine, func(k, _ string) bool { return strings.HasPrefix(k, "user.") })
			}
			// The kernel interprets ACLs (and may print them normalised).
			delete(mine, XattrACLAccess)
			delete(mine, XattrACLDflt)
			theirs := rdKernelXattrs(t, kp)
			delete(theirs, XattrACLAccess)
			delete(theirs, XattrACLDflt)
			if !maps.Equal(mine, theirs) {
				t.Errorf("%s: xattrs %q, kernel %q", p, mine, theirs)
			}
			switch ino.Mode & tree.TypeMask {
			case tree.TypeDir:
				if p != rel {
					walk(p)
				}
			case tree.TypeLink:
				target, err := img.ReadLink(p)
				kt, kerr := os.Readlink(kp)
				if err != nil || kerr != nil || target != kt {
					t.Errorf("%s: target %q (%v), kernel %q (%v)", p, target, err, kt, kerr)
				}
			case tree.TypeReg:
				if !readContent {
					break
				}
				f, err := img.Open(p)
				if err != nil {
					t.Fatalf("open %s: %v", p, err)
				}
				data, err := io.ReadAll(f)
				f.Close()
				kdata, kerr := os.ReadFile(kp)
				if err != nil || kerr != nil || !bytes.Equal(data, kdata) {
					t.Errorf("%s: content differs from the kernel's (%d vs %d bytes; %v, %v)", p, len(data), len(kdata), err, kerr)
				}
			}
		}
	}
	walk(".")
	return count
}

func TestKernelOverlayViewGolden(t *testing.T) {
	testenv.RequireMountNS(t)
	empty := t.TempDir()
	for _, name := range []string{"special.dump", "special_v1.dump", "longlink.dump", "honggfuzz-chardev-nonzero-size.dump", "no-newline.dump"} {
		t.Run(name, func(t *testing.T) {
			b := rdGoldens(t)[name]
			mnt := rdMountOverlay(t, b, empty)
			if n := rdCompareKernel(t, rdOpen(t, b), mnt, true); n == 0 {
				t.Error("nothing compared")
			}
		})
	}
}

// TestKernelOverlayViewExternal compares a generated tree whose external
// files have their objects in the data-only layer, content included, and the
// CentOS Stream 9 image's metadata (no objects).
func TestKernelOverlayViewExternal(t *testing.T) {
	testenv.RequireMountNS(t)
	files := map[string]gentree.File{}
	root := gentree.TreeWithDigests(gentree.Tiny, func(f gentree.File) [32]byte {
		d := gentree.FakeDigest(f)
		files[hex.EncodeToString(d[:])] = f
		return d
	})
	image, err := BuildImage(root, DefaultWriteOptions())
	if err != nil {
		t.Fatal(err)
	}
	objects := t.TempDir()
	_ = root.Walk(func(n *tree.Node) error {
		if n.LinkTo == nil && n.Payload != "" {
			p := filepath.Join(objects, n.Payload)
			os.MkdirAll(filepath.Dir(p), 0o755)
			if err := os.WriteFile(p, gentree.Content(files[hex.EncodeToString(n.Digest)]), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return nil
	})
	img, err := OpenWithObjects(bytes.NewReader(image), os.DirFS(objects))
	if err != nil {
		t.Fatal(err)
	}
	if n := rdCompareKernel(t, img, rdMountOverlay(t, image, objects), true); n < gentree.Tiny.Entries() {
		t.Errorf("compared %d entries of %d", n, gentree.Tiny.Entries())
	}

	_, cs9 := rdBuildAsset(t, "cs9-x86_64-minimal.dump.gz", rdAssets(t)["cs9-x86_64-minimal.dump.gz"])
	if n := rdCompareKernel(t, rdOpen(t, cs9), rdMountOverlay(t, cs9, t.TempDir()), false); n < 20000 {
		t.Errorf("compared only %d entries of cs9", n)
	}
}

func rdNames(dir string, ents []fs.DirEntry) []string {
	out := make([]string, len(ents))
	for i, e := range ents {
		out[i] = path.Join(dir, e.Name())
	}
	return out
}
