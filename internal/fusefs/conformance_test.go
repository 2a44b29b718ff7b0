package fusefs

import (
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"

	"github.com/mossfs/mossfs/erofs"
	"github.com/mossfs/mossfs/fsverity"
	"github.com/mossfs/mossfs/internal/gentree"
	"github.com/mossfs/mossfs/internal/testenv"
	"github.com/mossfs/mossfs/overlay"
	"github.com/mossfs/mossfs/overlay/overlaytest"
	"github.com/mossfs/mossfs/tree"
	"golang.org/x/sys/unix"
)

// testImage is an image file and the object directory it is served with.
type testImage struct {
	name, image, objects string
}

// mountOverlay mounts the kernel overlay of an image (the oracle) and
// returns its mount point.
func mountOverlay(t testing.TB, image, objects string) string {
	t.Helper()
	fd, _, err := overlay.Mount(overlay.Options{Image: image, ObjectsDir: objects, Verity: overlay.VerityOff, TempDir: t.TempDir()})
	if err != nil {
		t.Fatalf("kernel overlay: %v", err)
	}
	defer unix.Close(fd)
	dir := t.TempDir()
	if err := unix.MoveMount(fd, "", unix.AT_FDCWD, dir, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		t.Fatalf("attaching the overlay at %s: %v", dir, err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	return dir
}

// entry is everything a reader can observe of one path.
type entry struct {
	Mode, UID, GID uint32
	Nlink          uint64
	Ino            uint64
	Size           int64
	Mtime, Ctime   unix.Timespec
	Rdev           uint64
	Blocks         int64
	Blksize        int64
	Xattrs         string // name=hex value …, sorted
	Target         string
	Content        string // sha256 of the content, or the error reading it (or lstat's)
	Names          string // directory listing, sorted
}

// snapshot walks the mount at root and records every path.
func snapshot(t testing.TB, root string) map[string]entry {
	t.Helper()
	out := map[string]entry{}
	var walk func(rel string)
	walk = func(rel string) {
		p := filepath.Join(root, rel)
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			out["/"+rel] = entry{Content: "lstat: " + errnoName(err)}
			return
		}
		e := entry{
			Mode: st.Mode, UID: st.Uid, GID: st.Gid, Nlink: st.Nlink, Ino: st.Ino, Size: st.Size,
			Mtime: st.Mtim, Ctime: st.Ctim, Rdev: st.Rdev, Xattrs: xattrString(p),
			Blocks: st.Blocks, Blksize: st.Blksize,
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFLNK:
			e.Target, _ = os.Readlink(p)
		case unix.S_IFREG:
			e.Content = contentHash(p)
		case unix.S_IFDIR:
			ents, err := os.ReadDir(p)
			if err != nil {
				t.Fatalf("readdir %s: %v", p, err)
			}
			var names []string
			for _, d := range ents {
				names = append(names, d.Name())
			}
			sort.Strings(names)
			e.Names = strings.Join(names, "/")
			for _, n := range names {
				walk(filepath.Join(rel, n))
			}
		}
		out["/"+rel] = e
	}
	walk("")
	return out
}

func contentHash(p string) string {
	f, err := os.Open(p)
	if err != nil {
		return "open: " + errnoName(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "read: " + errnoName(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func errnoName(err error) string {
	var e syscall.Errno
	if errors.As(err, &e) {
		return fmt.Sprintf("errno %d (%v)", int(e), e)
	}
	return err.Error()
}

func xattrString(p string) string {
	sz, err := unix.Llistxattr(p, nil)
	if err != nil {
		return "listxattr: " + errnoName(err)
	}
	buf := make([]byte, sz)
	sz, err = unix.Llistxattr(p, buf)
	if err != nil {
		return "listxattr: " + errnoName(err)
	}
	var out []string
	for _, name := range strings.Split(strings.TrimRight(string(buf[:sz]), "\x00"), "\x00") {
		if name == "" {
			continue
		}
		vsz, err := unix.Lgetxattr(p, name, nil)
		if err != nil {
			out = append(out, name+"!"+errnoName(err))
			continue
		}
		v := make([]byte, vsz)
		vsz, err = unix.Lgetxattr(p, name, v)
		if err != nil {
			out = append(out, name+"!"+errnoName(err))
			continue
		}
		out = append(out, name+"="+hex.EncodeToString(v[:vsz]))
	}
	sort.Strings(out)
	return strings.Join(out, " ")
}

// compareSnapshots reports every difference between the FUSE view and the
// kernel overlay's view.
func compareSnapshots(t testing.TB, fuseView, kernel map[string]entry) {
	t.Helper()
	var errs []string
	for p, k := range kernel {
		f, ok := fuseView[p]
		if !ok {
			errs = append(errs, fmt.Sprintf("%s: missing from the FUSE mount", p))
			continue
		}
		if f != k {
			errs = append(errs, fmt.Sprintf("%s:\n  fuse    %+v\n  overlay %+v", p, f, k))
		}
	}
	for p := range fuseView {
		if _, ok := kernel[p]; !ok {
			errs = append(errs, fmt.Sprintf("%s: only in the FUSE mount", p))
		}
	}
	if len(errs) > 0 {
		sort.Strings(errs)
		if len(errs) > 20 {
			errs = append(errs[:20], fmt.Sprintf("… and %d more", len(errs)-20))
		}
		t.Fatalf("FUSE view differs from the kernel overlay (%d paths):\n%s", len(kernel), strings.Join(errs, "\n"))
	}
}

func writeImage(t testing.TB, root *tree.Node) string {
	t.Helper()
	b, err := erofs.BuildImage(root, erofs.DefaultWriteOptions())
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "image.cfs")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func parseDump(t testing.TB, path string) *tree.Node {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var r io.Reader = f
	if strings.HasSuffix(path, ".gz") {
		zr, err := gzip.NewReader(f)
		if err != nil {
			t.Fatal(err)
		}
		r = zr
	}
	root, err := erofs.ParseDump(r, erofs.DumpOptions{Name: filepath.Base(path)})
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// writeGentreeObjects builds a gentree transaction with real objects.
func gentreeImage(t testing.TB, spec gentree.Spec) (image, objects string) {
	t.Helper()
	objects = t.TempDir()
	files := gentree.List(spec)
	digests := make(map[int][32]byte)
	for _, f := range files {
		if f.Mode&tree.TypeMask != tree.TypeReg || f.Size == 0 {
			continue
		}
		c := gentree.Content(f)
		d := fsverity.Sum(c)
		digests[f.Index] = d
		p := filepath.Join(objects, fmt.Sprintf("%x/%x", d[:1], d[1:]))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, c, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	root := gentree.TreeWithDigests(spec, func(f gentree.File) [32]byte { return digests[f.Index] })
	return writeImage(t, root), objects
}

func conformanceImages(t *testing.T) []testImage {
	emptyObjects := t.TempDir()
	var imgs []testImage
	golden, err := filepath.Glob(testenv.SharedPath(t, "testdata", "composefs", "golden-images", "*.cfs"))
	if err != nil || len(golden) == 0 {
		t.Fatalf("no golden images: %v", err)
	}
	for _, g := range golden {
		imgs = append(imgs, testImage{"golden/" + filepath.Base(g), g, emptyObjects})
	}
	for _, d := range []string{"special.dump", "config-with-hard-link.dump.gz", "cs9-x86_64-minimal.dump.gz"} {
		root := parseDump(t, testenv.SharedPath(t, "testdata", "composefs", d))
		imgs = append(imgs, testImage{"dump/" + d, writeImage(t, root), emptyObjects})
	}
	tx := overlaytest.Sample("conf")
	objects := t.TempDir()
	tx.WriteObjects(t, objects)
	imgs = append(imgs, testImage{"sample", writeImage(t, tx.Root), objects})
	img, objs := gentreeImage(t, gentree.Tiny)
	imgs = append(imgs, testImage{"gentree-tiny", img, objs})
	return imgs
}

// TestConformance: for every test image, the FUSE view equals the kernel
// overlay's view of the same image and objects: metadata (including st_ino
// and nlink), xattrs, content (or the error reading it) and the names in
// every directory.
func TestConformance(t *testing.T) {
	testenv.RequireMountNS(t)
	for _, ti := range conformanceImages(t) {
		t.Run(ti.name, func(t *testing.T) {
			kernel := snapshot(t, mountOverlay(t, ti.image, ti.objects))
			for _, m := range modes {
				s := mountOpts(t, Options{Image: ti.image, Objects: ti.objects, Passthrough: m.passthrough})
				got := snapshot(t, s.Target())
				if !s.Passthrough() {
					// Without open requests (no-open mode) the daemon first
					// hears of a file at its first read: a missing or bad
					// object fails that read, where the overlay fails the
					// open, with the same errno.
					for p, e := range got {
						if rest, ok := strings.CutPrefix(e.Content, "read: "); ok && kernel[p].Content == "open: "+rest {
							e.Content = kernel[p].Content
							got[p] = e
						}
					}
				}
				compareSnapshots(t, got, kernel)
				s.Unmount()
			}
		})
	}
}
