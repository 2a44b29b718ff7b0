package overlay

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mossfs/mossfs/fsverity"
	"github.com/mossfs/mossfs/internal/gentree"
	"github.com/mossfs/mossfs/internal/testenv"
	"github.com/mossfs/mossfs/mounttuck"
	"github.com/mossfs/mossfs/overlay/overlaytest"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) { testenv.MainInMountNS(m) }

// fixture is one transaction on disk: image file and object directory.
type fixture struct {
	tx      *overlaytest.Tx
	image   string
	objects string
}

// newFixture writes the sample transaction's image (built by build) and
// objects under dir.
func newFixture(t *testing.T, dir, marker string, build func(testing.TB, *overlaytest.Tx) []byte) fixture {
	t.Helper()
	tx := overlaytest.Sample(marker)
	f := fixture{tx: tx, image: filepath.Join(dir, "image-"+marker), objects: filepath.Join(dir, "objects")}
	tx.WriteObjects(t, f.objects)
	if err := os.WriteFile(f.image, build(t, tx), 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

func mkfsBuild(t testing.TB, tx *overlaytest.Tx) []byte { return overlaytest.MkfsImage(t, tx.Root) }

// builders are the image producers the mount tests run against.
var builders = map[string]func(testing.TB, *overlaytest.Tx) []byte{
	"writer":     writerBuild,
	"mkfs.erofs": mkfsBuild,
}

func writerBuild(t testing.TB, tx *overlaytest.Tx) []byte { return overlaytest.Image(t, tx.Root) }

// attach mounts the detached mount fd on a fresh directory and returns it.
func attach(t *testing.T, fd int) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.MoveMount(fd, "", unix.AT_FDCWD, dir, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		t.Fatalf("attach at %s: %v", dir, err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	return dir
}

func onTmpfs(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := unix.Mount("overlay-test", dir, "tmpfs", 0, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	return dir
}

// fileBackedExpected reports whether an image in dir should mount
// file-backed: on ext4 from Linux 6.12 (kernel.md §1.2).
func fileBackedExpected(t *testing.T, dir string) bool {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	var uts unix.Utsname
	unix.Uname(&uts)
	if st.Type != unix.EXT4_SUPER_MAGIC || !kernelAtLeast(unix.ByteSliceToString(uts.Release[:]), 6, 12) {
		t.Logf("note: %s is not on ext4 (f_type %#x) or the kernel is older than 6.12: a loop device is expected", dir, st.Type)
		return false
	}
	return true
}

func TestMountMatchesSource(t *testing.T) {
	testenv.RequireMountNS(t)
	for bname, build := range builders {
		for _, m := range AllMethods {
			if m == MethodLegacyClassic && bname != "writer" {
				continue // needs the root whiteout stubs only composefs images carry
			}
			for _, where := range []string{"ext4", "tmpfs", "forced-loop"} {
				t.Run(bname+"/"+string(m)+"/"+where, func(t *testing.T) {
					dir := t.TempDir()
					wantBacking := "loop"
					if where == "tmpfs" {
						dir = onTmpfs(t)
					} else if where == "ext4" && fileBackedExpected(t, dir) {
						wantBacking = "file"
					}
					tmp := t.TempDir()
					f := newFixture(t, dir, "A", build)
					fd, info, err := Mount(Options{Image: f.image, ObjectsDir: f.objects, Methods: []Method{m},
						NoFileBacked: where == "forced-loop", TempDir: tmp})
					if errors.Is(err, errUnsupported) && !methodExpected(m) {
						t.Skipf("kernel %s lacks method %s: %v", kernelRelease(), m, err)
					}
					if err != nil {
						t.Fatal(err)
					}
					defer unix.Close(fd)
					if info.Method != m {
						t.Errorf("method %s, want %s", info.Method, m)
					}
					if info.ImageBacking != wantBacking {
						t.Errorf("image backing %q, want %q", info.ImageBacking, wantBacking)
					}
					if info.Verity != VerityOff {
						t.Errorf("verity %q on a host without fs-verity, want off", info.Verity)
					}
					if bname == "writer" && info.ACL {
						t.Errorf("composefs image without ACLs mounted with ACLs (want noacl)")
					}
					mnt := attach(t, fd)
					overlaytest.Compare(t, mnt, f.tx)
					checkNoIntermediate(t, tmp)
				})
			}
		}
	}
}

// checkNoIntermediate fails if an EROFS mount or a temporary mount point
// is left in this namespace once the overlay is built.
func checkNoIntermediate(t *testing.T, tmp string) {
	t.Helper()
	mounts, err := mounttuck.ReadMountInfo()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range mounts {
		if m.FSType == "erofs" {
			t.Errorf("intermediate EROFS mount left in the mount table: %+v", m)
		}
	}
	left, _ := os.ReadDir(tmp)
	for _, e := range left {
		t.Errorf("temporary mount point left: %s", e.Name())
	}
}

func TestMountAllMethodsFallBack(t *testing.T) {
	testenv.RequireMountNS(t)
	f := newFixture(t, t.TempDir(), "A", mkfsBuild)
	fd, info, err := Mount(Options{Image: f.image, ObjectsDir: f.objects})
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	// The newest method the kernel has is the one used.
	for _, m := range AllMethods {
		if methodExpected(m) {
			if info.Method != m {
				t.Errorf("default method %s, want %s on kernel %s", info.Method, m, kernelRelease())
			}
			break
		}
	}
	mnt := attach(t, fd)
	overlaytest.Compare(t, mnt, f.tx)
	mounts, _ := mounttuck.MountsAt(mnt)
	if len(mounts) != 1 || mounts[0].Source != DefaultSource || mounts[0].FSType != "overlay" {
		t.Errorf("mount at %s: %+v, want one overlay with source %s", mnt, mounts, DefaultSource)
	}
	if !strings.Contains(mounts[0].SuperOptions, "ro") {
		t.Errorf("overlay super options %q, want read-only", mounts[0].SuperOptions)
	}
}

func TestMountVerityRequireIsEnforced(t *testing.T) {
	testenv.RequireMountNS(t)
	f := newFixture(t, t.TempDir(), "A", mkfsBuild)
	fd, info, err := Mount(Options{Image: f.image, ObjectsDir: f.objects, Verity: VerityRequire})
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if info.Verity != VerityRequire {
		t.Fatalf("verity %q, want require", info.Verity)
	}
	mnt := attach(t, fd)
	// The objects have no fs-verity here (nor has this kernel): overlayfs
	// must refuse to serve their content, and still serve inline files.
	_, err = os.ReadFile(filepath.Join(mnt, "bin/tool"))
	if !errors.Is(err, unix.EIO) {
		t.Errorf("read of an external file under verity=require: %v, want EIO", err)
	}
	if _, err := os.ReadFile(filepath.Join(mnt, "tx")); err != nil {
		t.Errorf("inline file under verity=require: %v", err)
	}
}

func TestMountLoopDeviceIsReleased(t *testing.T) {
	testenv.RequireMountNS(t)
	f := newFixture(t, onTmpfs(t), "A", mkfsBuild)
	fd, info, err := Mount(Options{Image: f.image, ObjectsDir: f.objects})
	if err != nil {
		t.Fatal(err)
	}
	if info.LoopDevice == "" {
		unix.Close(fd)
		t.Fatalf("image on tmpfs mounted without a loop device: %+v", info)
	}
	backing := filepath.Join("/sys/block", filepath.Base(info.LoopDevice), "loop/backing_file")
	if b, err := os.ReadFile(backing); err != nil || strings.TrimSpace(string(b)) != f.image {
		t.Errorf("%s: %q, %v; want %s", backing, b, err, f.image)
	}
	unix.Close(fd) // never attached: unmounts overlay and EROFS
	if _, err := os.Stat(backing); err == nil {
		// autoclear runs when the superblock goes, which may lag a moment
		// behind close(2) (deferred fput); it must not stay bound.
		for range 500 {
			if _, err := os.Stat(backing); err != nil {
				return
			}
			unix.Nanosleep(&unix.Timespec{Nsec: 10e6}, nil)
		}
		t.Errorf("%s still bound after the mount was released", info.LoopDevice)
	}
}

func TestMountErrors(t *testing.T) {
	testenv.RequireMountNS(t)
	dir := t.TempDir()
	f := newFixture(t, dir, "A", mkfsBuild)
	garbage := filepath.Join(dir, "garbage")
	os.WriteFile(garbage, make([]byte, 8192), 0o644)
	for name, opts := range map[string]Options{
		"no image":       {Image: filepath.Join(dir, "missing"), ObjectsDir: f.objects},
		"not an image":   {Image: garbage, ObjectsDir: f.objects},
		"no objects":     {Image: f.image, ObjectsDir: filepath.Join(dir, "missing")},
		"bad verity":     {Image: f.image, ObjectsDir: f.objects, Verity: "maybe"},
		"objects a file": {Image: f.image, ObjectsDir: f.image},
	} {
		fd, _, err := Mount(opts)
		if err == nil {
			unix.Close(fd)
			t.Errorf("%s: mounted", name)
			continue
		}
		t.Logf("%s: %v", name, err)
	}
}

func TestImageHasACL(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		magic, flags uint32
		want         bool
	}{{composefsMagic, 0, false}, {composefsMagic, 1, true}, {composefsMagic, 2, false}, {0, 0, true}} {
		var b [4096]byte
		binary.LittleEndian.PutUint32(b[0:], tc.magic)
		binary.LittleEndian.PutUint32(b[8:], tc.flags)
		p := filepath.Join(dir, "img")
		os.WriteFile(p, b[:], 0o644)
		got, err := imageHasACL(p)
		if err != nil || got != tc.want {
			t.Errorf("magic %x flags %x: %v, %v; want %v", tc.magic, tc.flags, got, err, tc.want)
		}
	}
	os.WriteFile(filepath.Join(dir, "short"), []byte{1, 2}, 0o644)
	if _, err := imageHasACL(filepath.Join(dir, "short")); err == nil {
		t.Error("short image accepted")
	}
}

func TestParseVerity(t *testing.T) {
	for _, s := range []string{"require", "on", "off", "auto", ""} {
		if _, err := ParseVerity(s); err != nil {
			t.Errorf("%q: %v", s, err)
		}
	}
	if _, err := ParseVerity("yes"); err == nil {
		t.Error("yes accepted")
	}
}

func TestEscapeLayer(t *testing.T) {
	if got := escapeLayer(`/a:b,c\d`); got != `/a\:b\,c\\d` {
		t.Errorf("escapeLayer = %q", got)
	}
}

// recorder is a testing.TB that records failures instead of stopping.
type recorder struct {
	testing.TB
	failed []string
}

func (r *recorder) Helper()                        {}
func (r *recorder) Fatalf(format string, a ...any) { r.failed = append(r.failed, format) }

func TestCompareDetectsDifferences(t *testing.T) {
	testenv.RequireMountNS(t)
	dir := t.TempDir()
	f := newFixture(t, dir, "A", mkfsBuild)
	other := overlaytest.Sample("B") // same shape, other content and xattrs
	fd, _, err := Mount(Options{Image: f.image, ObjectsDir: f.objects})
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	mnt := attach(t, fd)
	r := &recorder{TB: t}
	overlaytest.Compare(r, mnt, other)
	if len(r.failed) == 0 {
		t.Fatal("Compare found no difference between transactions A and B")
	}
	other.Objects = f.tx.Objects
	r = &recorder{TB: t}
	overlaytest.Compare(r, mnt, f.tx)
	if len(r.failed) != 0 {
		t.Fatal("Compare of A against itself failed")
	}
}

// TestMountGeneratedTree mounts a generated tree (gentree.Tiny, real
// objects) and compares every entry.
func TestMountGeneratedTree(t *testing.T) {
	testenv.RequireMountNS(t)
	dir := t.TempDir()
	tx := &overlaytest.Tx{Objects: overlaytest.Objects{}}
	tx.Root = gentree.TreeWithDigests(gentree.Tiny, func(f gentree.File) [32]byte {
		c := gentree.Content(f)
		d := fsverity.Sum(c)
		tx.Objects[fmt.Sprintf("%x/%x", d[:1], d[1:])] = c
		return d
	})
	objects := filepath.Join(dir, "objects")
	tx.WriteObjects(t, objects)
	img := filepath.Join(dir, "image")
	if err := os.WriteFile(img, overlaytest.Image(t, tx.Root), 0o644); err != nil {
		t.Fatal(err)
	}
	fd, _, err := Mount(Options{Image: img, ObjectsDir: objects})
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	overlaytest.Compare(t, attach(t, fd), tx)
}

// TestMountACL mounts an image whose header says it has POSIX ACLs (so
// ACLs stay enabled) and the same image with the flag cleared (mounted
// noacl: the ACL is no longer visible).
func TestMountACL(t *testing.T) {
	testenv.RequireMountNS(t)
	dir := t.TempDir()
	tx := overlaytest.Sample("A")
	// user::rw- user:1000:rw- group::r-- mask::rw- other::r--
	acl := []byte{2, 0, 0, 0}
	for _, e := range [][3]uint32{{1, 6, 0xffffffff}, {2, 6, 1000}, {4, 4, 0xffffffff}, {0x10, 6, 0xffffffff}, {0x20, 4, 0xffffffff}} {
		acl = binary.LittleEndian.AppendUint16(acl, uint16(e[0]))
		acl = binary.LittleEndian.AppendUint16(acl, uint16(e[1]))
		acl = binary.LittleEndian.AppendUint32(acl, e[2])
	}
	conf := tx.Root.Child("etc").Child("conf")
	conf.SetXattr("system.posix_acl_access", acl)
	objects := filepath.Join(dir, "objects")
	tx.WriteObjects(t, objects)
	img := overlaytest.Image(t, tx.Root)
	if binary.LittleEndian.Uint32(img[8:])&composefsHasACL == 0 {
		t.Fatal("the writer did not set HAS_ACL for an image with an ACL")
	}
	withACL := filepath.Join(dir, "acl")
	os.WriteFile(withACL, img, 0o644)
	fd, info, err := Mount(Options{Image: withACL, ObjectsDir: objects})
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if !info.ACL {
		t.Error("image with HAS_ACL mounted noacl")
	}
	mnt := attach(t, fd)
	overlaytest.Compare(t, mnt, tx)

	binary.LittleEndian.PutUint32(img[8:], binary.LittleEndian.Uint32(img[8:])&^composefsHasACL)
	noACL := filepath.Join(dir, "noacl")
	os.WriteFile(noACL, img, 0o644)
	fd2, info, err := Mount(Options{Image: noACL, ObjectsDir: objects})
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd2)
	if info.ACL {
		t.Error("image without HAS_ACL mounted with ACLs")
	}
	mnt2 := attach(t, fd2)
	if _, err := unix.Lgetxattr(filepath.Join(mnt2, "etc/conf"), "system.posix_acl_access", make([]byte, 256)); err == nil {
		t.Error("ACL visible on a noacl mount")
	}
}

func kernelRelease() string {
	var uts unix.Utsname
	unix.Uname(&uts)
	return unix.ByteSliceToString(uts.Release[:])
}

// methodExpected reports whether the running kernel is new enough for m
// (kernel.md §1): tests skip an unsupported method only on older kernels.
func methodExpected(m Method) bool {
	r := kernelRelease()
	switch m {
	case MethodDetachedLayer:
		return kernelAtLeast(r, 6, 15)
	case MethodLayerKeys:
		return kernelAtLeast(r, 6, 7)
	case MethodLegacy:
		return kernelAtLeast(r, 6, 5)
	}
	return true
}

// TestMountWithoutDetachedClone plays a kernel before 6.15, which cannot
// clone a detached mount: path-based methods attach the EROFS mount itself,
// and a method tried after one that used it up gets a fresh mount.
func TestMountWithoutDetachedClone(t *testing.T) {
	testenv.RequireMountNS(t)
	defer func(f func(int) (int, error)) { cloneDetached = f }(cloneDetached)
	cloneDetached = func(int) (int, error) { return -1, unix.EINVAL }
	for _, where := range []string{"ext4", "tmpfs"} {
		dir := t.TempDir()
		if where == "tmpfs" {
			dir = onTmpfs(t)
		}
		f := newFixture(t, dir, "A", writerBuild)
		for _, m := range []Method{MethodLayerKeys, MethodLegacy, MethodLegacyClassic} {
			tmp := t.TempDir()
			fd, info, err := Mount(Options{Image: f.image, ObjectsDir: f.objects, Methods: []Method{m}, TempDir: tmp})
			if err != nil {
				t.Fatalf("%s/%s: %v", where, m, err)
			}
			if info.Method != m {
				t.Errorf("%s/%s: method %s", where, m, info.Method)
			}
			overlaytest.Compare(t, attach(t, fd), f.tx)
			unix.Close(fd)
			checkNoIntermediate(t, tmp)
		}
		// layer-keys attaches (uses up) the image, then is refused: legacy
		// must still work, on a fresh EROFS mount.
		testAfterAttach = func(m Method) error {
			if m == MethodLayerKeys {
				return fmt.Errorf("%w: injected", errUnsupported)
			}
			return nil
		}
		fd, info, err := Mount(Options{Image: f.image, ObjectsDir: f.objects, Methods: []Method{MethodLayerKeys, MethodLegacy}})
		testAfterAttach = nil
		if err != nil {
			t.Fatalf("%s: fallback after a used-up image: %v", where, err)
		}
		if info.Method != MethodLegacy {
			t.Errorf("%s: method %s, want legacy", where, info.Method)
		}
		overlaytest.Compare(t, attach(t, fd), f.tx)
		unix.Close(fd)
	}
}

// enableVerity turns fs-verity on for every file under dir; it skips the
// test where the kernel or filesystem has none (this host), except in the
// kvmtests VM, which has it: there the test must run.
func enableVerity(t *testing.T, dir string) {
	t.Helper()
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		return fsverity.Enable(int(f.Fd()))
	})
	if errors.Is(err, fsverity.ErrNotSupported) && os.Getenv("MOSSFS_KVM_GUEST") != "1" {
		t.Skipf("no fs-verity on the filesystem of %s (the kvmtests VM runs this): %v", dir, err)
	}
	if err != nil {
		t.Fatal(err)
	}
}

// TestMountVerityAuto: with fs-verity on every object, auto means require;
// the tree reads back whole, and an object whose digest is not the one the
// image names fails to read (EIO).
func TestMountVerityAuto(t *testing.T) {
	testenv.RequireMountNS(t)
	f := newFixture(t, t.TempDir(), "A", writerBuild)
	enableVerity(t, f.objects)
	if !objectsHaveVerity(f.objects) {
		t.Fatal("objects with fs-verity enabled not detected")
	}
	fd, info, err := Mount(Options{Image: f.image, ObjectsDir: f.objects})
	if err != nil {
		t.Fatal(err)
	}
	if info.Verity != VerityRequire {
		t.Fatalf("auto verity with verity objects: %q, want require", info.Verity)
	}
	overlaytest.Compare(t, attach(t, fd), f.tx)
	unix.Close(fd)

	// Put another file, with fs-verity, where /bin/tool's object belongs.
	tool := f.tx.Root.Child("bin").Child("tool")
	obj := filepath.Join(f.objects, tool.Payload)
	evil := filepath.Join(t.TempDir(), "evil")
	os.WriteFile(evil, overlaytest.Content("evil", "/bin/tool", int(tool.Size)), 0o644)
	enableVerity(t, filepath.Dir(evil))
	if err := os.Rename(evil, obj); err != nil {
		t.Fatal(err)
	}
	fd, _, err = Mount(Options{Image: f.image, ObjectsDir: f.objects})
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	mnt := attach(t, fd)
	if _, err := os.ReadFile(filepath.Join(mnt, "bin/tool")); !errors.Is(err, unix.EIO) {
		t.Errorf("read of an object with the wrong digest: %v, want EIO", err)
	}
	if _, err := os.ReadFile(filepath.Join(mnt, "bin/suid")); err != nil {
		t.Errorf("read of a good object: %v", err)
	}
}

// TestFirstObject: the verity probe's object is a regular file in a
// two-letter directory, found past other entries and past the first 1 KiB
// of directory entries read.
func TestFirstObject(t *testing.T) {
	dir := t.TempDir()
	if got := firstObject(dir); got != "" {
		t.Errorf("empty store: %q", got)
	}
	for i := range 200 {
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("not-a-fan-out-%03d", i)), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, "long-name"), 0o755); err != nil {
		t.Fatal(err)
	}
	fan := filepath.Join(dir, "ab")
	if err := os.Mkdir(fan, 0o755); err != nil {
		t.Fatal(err)
	}
	if got := firstObject(dir); got != "" {
		t.Errorf("no object yet: %q", got)
	}
	if err := os.Symlink("x", filepath.Join(fan, "link")); err != nil {
		t.Fatal(err)
	}
	obj := filepath.Join(fan, "cdef")
	if err := os.WriteFile(obj, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := firstObject(dir); got != obj {
		t.Errorf("firstObject = %q, want %q", got, obj)
	}
}

// TestMountKeepImageMount: with KeepImageMount the image's detached EROFS
// mount comes back open (Info.ImageMount) for the caller to close, and the
// overlay stays whole after it is closed; without, it is closed (-1).
func TestMountKeepImageMount(t *testing.T) {
	testenv.RequireMountNS(t)
	f := newFixture(t, t.TempDir(), "A", mkfsBuild)
	fd, info, err := Mount(Options{Image: f.image, ObjectsDir: f.objects, KeepImageMount: true})
	if err != nil {
		t.Fatal(err)
	}
	if info.ImageMount < 0 {
		unix.Close(fd)
		t.Fatalf("KeepImageMount: Info.ImageMount %d", info.ImageMount)
	}
	var st unix.Statfs_t
	if err := unix.Fstatfs(info.ImageMount, &st); err != nil || st.Type != unix.EROFS_SUPER_MAGIC_V1 {
		t.Errorf("Info.ImageMount %d: statfs type %#x, %v; want the image's EROFS mount", info.ImageMount, st.Type, err)
	}
	dir := attach(t, fd)
	unix.Close(fd)
	if err := unix.Close(info.ImageMount); err != nil {
		t.Errorf("closing the image's mount: %v", err)
	}
	overlaytest.Compare(t, dir, f.tx)

	fd, info, err = Mount(Options{Image: f.image, ObjectsDir: f.objects})
	if err != nil {
		t.Fatal(err)
	}
	unix.Close(fd)
	if info.ImageMount != -1 {
		t.Errorf("without KeepImageMount: Info.ImageMount %d, want -1", info.ImageMount)
	}
}
