package dirimport

import (
	"bytes"
	"context"
	"encoding/hex"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/mossfs/mossfs/cas"
	"github.com/mossfs/mossfs/fsverity"
	"github.com/mossfs/mossfs/tree"
)

// memSink is an ObjectSink keeping objects in memory, checking digests.
type memSink struct {
	mu      sync.Mutex
	objects map[[32]byte][]byte
	paths   []string
}

func newMemSink() *memSink { return &memSink{objects: map[[32]byte][]byte{}} }

func (s *memSink) Put(r io.Reader) ([32]byte, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return [32]byte{}, err
	}
	d := fsverity.Sum(data)
	s.mu.Lock()
	s.objects[d] = data
	s.mu.Unlock()
	return d, nil
}

func (s *memSink) PutFile(path string) ([32]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return [32]byte{}, err
	}
	defer f.Close()
	s.mu.Lock()
	s.paths = append(s.paths, path)
	s.mu.Unlock()
	return s.Put(f)
}

// fsverityCLI returns the digest the fsverity tool computes for a file.
func fsverityCLI(t *testing.T, path string) []byte {
	t.Helper()
	out, err := exec.Command("fsverity", "digest", "--hash-alg=sha256", "--block-size=4096", path).Output()
	if err != nil {
		t.Fatalf("fsverity digest %s: %v", path, err)
	}
	f := strings.Fields(string(out))
	d, err := hex.DecodeString(strings.TrimPrefix(f[0], "sha256:"))
	if err != nil || len(d) != 32 {
		t.Fatalf("fsverity digest output %q", out)
	}
	return d
}

func pattern(n int) []byte {
	b := make([]byte, n)
	x := uint32(n) | 1
	for i := range b {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = byte(x)
	}
	return b
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// fixture is a temporary tree with every file type, plus what Import must
// make of it.
type fixture struct {
	dir     string // the imported directory
	outside string // a sibling directory symlinks point into
	root    bool   // devices and trusted.* xattrs were created
	files   map[string][]byte
}

var fixMtime = unix.Timespec{Sec: 1700000000, Nsec: 123456789}

func makeFixture(t *testing.T) *fixture {
	t.Helper()
	base := t.TempDir()
	fx := &fixture{
		dir:     filepath.Join(base, "src"),
		outside: filepath.Join(base, "outside"),
		root:    os.Geteuid() == 0,
		files:   map[string][]byte{},
	}
	must(t, os.MkdirAll(fx.outside, 0o755))
	must(t, os.WriteFile(filepath.Join(fx.outside, "secret"), []byte("outside content, never imported\n"), 0o644))
	p := func(rel string) string { return filepath.Join(fx.dir, rel) }
	for _, d := range []string{"", "a", "a/b", "empty", "z"} {
		must(t, os.MkdirAll(p(d), 0o755))
	}
	must(t, unix.Chmod(p("z"), 0o1777))
	for rel, size := range map[string]int{
		"a/zero": 0, "a/one": 1, "a/b/inline64": 64, "a/b/ext65": 65,
		"big": 3*4096 + 7, "huge": 300 * 4096, "z/x": 5000,
	} {
		data := pattern(size)
		must(t, os.WriteFile(p(rel), data, 0o644))
		fx.files[rel] = data
	}
	must(t, unix.Chmod(p("big"), 0o4755))
	// Hardlinks: a/b/ext65 first in sorted DFS order, then linked names.
	must(t, os.Link(p("a/b/ext65"), p("z/link-to-ext65")))
	must(t, os.Link(p("a/b/ext65"), p("hl")))
	must(t, os.Link(p("a/one"), p("a/two")))
	// Symlinks pointing out of the tree: must be stored, never followed.
	must(t, os.Symlink(fx.outside, p("escape-abs")))
	must(t, os.Symlink("../outside/secret", p("escape-rel")))
	must(t, os.Symlink("/etc/passwd", p("a/passwd")))
	must(t, os.Symlink("b/inline64", p("a/in")))
	must(t, unix.Mkfifo(p("fifo"), 0o600))
	must(t, unix.Mknod(p("sock"), unix.S_IFSOCK|0o755, 0))
	must(t, unix.Setxattr(p("a/b/ext65"), "user.one", []byte("1"), 0))
	must(t, unix.Setxattr(p("a/b/ext65"), "user.empty", nil, 0))
	must(t, unix.Setxattr(p("a"), "user.dir", []byte("dir\x00bin"), 0))
	if fx.root {
		must(t, unix.Mknod(p("null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
		must(t, unix.Mknod(p("loop"), unix.S_IFBLK|0o660, int(unix.Mkdev(7, 300))))
		must(t, unix.Mknod(p("whiteout"), unix.S_IFCHR|0o000, 0))
		must(t, unix.Chmod(p("null"), 0o666)) // past the umask
		must(t, unix.Chmod(p("loop"), 0o660))
		must(t, unix.Setxattr(p("a/one"), "trusted.t", []byte("tv"), 0))
		// user.* is not allowed on special files; trusted.* is.
		must(t, unix.Setxattr(p("fifo"), "trusted.fifo", []byte("f"), 0))
		must(t, unix.Lsetxattr(p("a/passwd"), "trusted.sym", []byte("on the link"), 0))
		must(t, unix.Setxattr(p("z"), "trusted.overlay.opaque", []byte("y"), 0))
		must(t, os.Lchown(p("a/b/inline64"), 1234, 5678))
		must(t, os.Lchown(p("a/passwd"), 42, 43))
	}
	// mtimes last (deepest first), so that creating entries does not change them.
	var all []string
	must(t, filepath.Walk(fx.dir, func(path string, _ os.FileInfo, err error) error {
		all = append(all, path)
		return err
	}))
	for i := len(all) - 1; i >= 0; i-- {
		ts := []unix.Timespec{fixMtime, fixMtime}
		must(t, unix.UtimesNanoAt(unix.AT_FDCWD, all[i], ts, unix.AT_SYMLINK_NOFOLLOW))
	}
	return fx
}

// expected builds the tree Import must return for the fixture.
func (fx *fixture) expected(t *testing.T, epoch, skipDevices bool, xattrs func(string) bool) *tree.Node {
	t.Helper()
	mt := tree.Timespec{Sec: fixMtime.Sec, Nsec: uint32(fixMtime.Nsec)}
	if epoch {
		mt = tree.Timespec{}
	}
	uid, gid := uint32(os.Geteuid()), uint32(os.Getegid())
	nodes := map[string]*tree.Node{}
	root := &tree.Node{Mode: tree.TypeDir | 0o755, UID: uid, GID: gid, Mtime: mt, Nlink: 2}
	nodes[""] = root
	parent := func(rel string) *tree.Node {
		d := filepath.Dir(rel)
		if d == "." {
			d = ""
		}
		return nodes[d]
	}
	put := func(rel string, n *tree.Node) *tree.Node {
		n.Name = filepath.Base(rel)
		if n.LinkTo == nil {
			n.UID, n.GID, n.Mtime = uid, gid, mt
			if n.Nlink == 0 {
				n.Nlink = 1
			}
		}
		parent(rel).AddChild(n)
		nodes[rel] = n
		return n
	}
	reg := func(rel string, perm uint32) *tree.Node {
		data := fx.files[rel]
		n := &tree.Node{Mode: tree.TypeReg | perm, Size: uint64(len(data))}
		switch {
		case len(data) == 0:
		case len(data) <= InlineMax:
			n.Content = data
		default:
			d := fsverityCLI(t, filepath.Join(fx.dir, rel))
			n.Digest = d
			n.Payload = hex.EncodeToString(d[:1]) + "/" + hex.EncodeToString(d[1:])
		}
		return put(rel, n)
	}
	dir := func(rel string, perm uint32) *tree.Node {
		return put(rel, &tree.Node{Mode: tree.TypeDir | perm, Nlink: 2})
	}
	sym := func(rel, target string) *tree.Node {
		return put(rel, &tree.Node{Mode: tree.TypeLink | 0o777, Target: target, Size: uint64(len(target))})
	}
	// Sorted DFS order, so that hardlink owners come first.
	dir("a", 0o755)
	dir("a/b", 0o755)
	ext := reg("a/b/ext65", 0o644)
	ext.Nlink = 3
	inl := reg("a/b/inline64", 0o644)
	sym("a/in", "b/inline64")
	one := reg("a/one", 0o644)
	one.Nlink = 2
	pw := sym("a/passwd", "/etc/passwd")
	put("a/two", &tree.Node{LinkTo: one})
	reg("a/zero", 0o644)
	reg("big", 0o4755)
	dir("empty", 0o755)
	sym("escape-abs", fx.outside)
	sym("escape-rel", "../outside/secret")
	put("fifo", &tree.Node{Mode: tree.TypeFifo | 0o600})
	put("hl", &tree.Node{LinkTo: ext})
	reg("huge", 0o644)
	if fx.root && !skipDevices {
		put("loop", &tree.Node{Mode: tree.TypeBlock | 0o660, Rdev: uint32(unix.Mkdev(7, 300))})
		put("null", &tree.Node{Mode: tree.TypeChar | 0o666, Rdev: uint32(unix.Mkdev(1, 3))})
	}
	put("sock", &tree.Node{Mode: tree.TypeSock | 0o755})
	if fx.root && !skipDevices {
		put("whiteout", &tree.Node{Mode: tree.TypeChar})
	}
	dir("z", 0o1777)
	put("z/link-to-ext65", &tree.Node{LinkTo: ext})
	reg("z/x", 0o644)
	root.Nlink += 3 // a, empty, z
	nodes["a"].Nlink++

	setx := func(n *tree.Node, name, value string) {
		if xattrs(name) {
			n.SetXattr(name, []byte(value))
		}
	}
	setx(ext, "user.one", "1")
	setx(ext, "user.empty", "")
	setx(nodes["a"], "user.dir", "dir\x00bin")
	if fx.root {
		setx(nodes["fifo"], "trusted.fifo", "f")
		setx(one, "trusted.t", "tv")
		setx(pw, "trusted.sym", "on the link")
		setx(nodes["z"], "trusted.overlay.opaque", "y")
		inl.UID, inl.GID = 1234, 5678
		pw.UID, pw.GID = 42, 43
	}
	return root
}

// checkNlink compares what tree.Equal leaves out: nlink of every inode.
func checkNlink(t *testing.T, got, want *tree.Node) {
	t.Helper()
	_ = want.Walk(func(w *tree.Node) error {
		g := got.Lookup(w.Path())
		if g == nil {
			t.Errorf("%s missing", w.Path())
			return nil
		}
		if w.LinkTo == nil && g.Nlink != w.Nlink {
			t.Errorf("%s: nlink %d, want %d", w.Path(), g.Nlink, w.Nlink)
		}
		return nil
	})
}

func allXattrs(string) bool { return true }

func TestImportFixture(t *testing.T) {
	fx := makeFixture(t)
	for _, tc := range []struct {
		name   string
		opts   Options
		xattrs func(string) bool
	}{
		{"default", Options{}, allXattrs},
		{"epoch-skipdev", Options{UseEpoch: true, SkipDevices: true, Threads: 1}, allXattrs},
		{"skip-xattrs", Options{SkipXattrs: true, Threads: 3}, func(string) bool { return false }},
		{"user-xattrs", Options{UserXattrs: true}, func(n string) bool { return strings.HasPrefix(n, "user.") }},
		{"namespaces", Options{XattrNamespaces: []string{"trusted."}}, func(n string) bool { return strings.HasPrefix(n, "trusted.") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sink := newMemSink()
			tc.opts.Sink = sink
			var calls, lastFiles, lastBytes int64
			tc.opts.Progress = func(files, bytes int64) { calls++; lastFiles, lastBytes = files, bytes }
			got, err := Import(context.Background(), fx.dir, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			want := fx.expected(t, tc.opts.UseEpoch, tc.opts.SkipDevices, tc.xattrs)
			want.Sort()
			got.Sort()
			if err := tree.Equal(got, want); err != nil {
				t.Fatal(err)
			}
			checkNlink(t, got, want)
			// Every external file is in the sink, with its content; nothing
			// from outside the tree is.
			var regular, total int64
			_ = want.Walk(func(n *tree.Node) error {
				if n.LinkTo != nil || n.Type() != tree.TypeReg {
					return nil
				}
				regular++
				total += int64(n.Size)
				if n.Payload == "" {
					return nil
				}
				data, ok := sink.objects[[32]byte(n.Digest)]
				rel := strings.TrimPrefix(n.Path(), "/")
				if !ok || !bytes.Equal(data, fx.files[rel]) {
					t.Errorf("%s: object %s missing or wrong in the sink", rel, n.Payload)
				}
				return nil
			})
			if len(sink.objects) != 4 {
				t.Errorf("sink holds %d objects, want 4 (ext65, big, huge, z/x)", len(sink.objects))
			}
			if calls != regular || lastFiles != regular || lastBytes != total {
				t.Errorf("progress: %d calls, last (%d, %d), want %d calls ending (%d, %d)", calls, lastFiles, lastBytes, regular, regular, total)
			}
		})
	}
}

func TestImportWithoutSinkSameTree(t *testing.T) {
	fx := makeFixture(t)
	a, err := Import(context.Background(), fx.dir, Options{Sink: newMemSink()})
	must(t, err)
	b, err := Import(context.Background(), fx.dir, Options{Threads: 1})
	must(t, err)
	a.Sort()
	b.Sort()
	if err := tree.Equal(a, b); err != nil {
		t.Fatal(err)
	}
}

func TestSymlinkXattrNotFollowed(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("trusted.* xattrs on a symlink need root")
	}
	dir := t.TempDir()
	must(t, os.WriteFile(filepath.Join(dir, "target"), []byte("x"), 0o644))
	must(t, unix.Setxattr(filepath.Join(dir, "target"), "user.target", []byte("t"), 0))
	must(t, os.Symlink("target", filepath.Join(dir, "link")))
	got, err := Import(context.Background(), dir, Options{})
	must(t, err)
	got.Sort()
	if l := got.Lookup("link"); l == nil || len(l.Xattrs) != 0 || l.Target != "target" {
		t.Fatalf("link: %+v (must not carry the target's xattrs)", l)
	}
}

// TestRootThroughSymlink: the directory argument itself may be a symlink
// (the caller named it), the entries below may not lead out.
func TestRootThroughSymlink(t *testing.T) {
	fx := makeFixture(t)
	link := filepath.Join(t.TempDir(), "l")
	must(t, os.Symlink(fx.dir, link))
	got, err := Import(context.Background(), link, Options{})
	must(t, err)
	got.Sort()
	if got.Lookup("escape-abs/secret") != nil || got.Lookup("a/b/ext65") == nil {
		t.Fatal("wrong tree through a symlinked root")
	}
}

// TestContentRefusesSymlinkPath: a regular file swapped for a symlink (or a
// parent swapped for one) between the walk and the read is refused.
func TestContentRefusesSymlinkPath(t *testing.T) {
	base := t.TempDir()
	dir := filepath.Join(base, "src")
	must(t, os.MkdirAll(filepath.Join(dir, "d"), 0o755))
	must(t, os.WriteFile(filepath.Join(base, "victim"), pattern(1000), 0o644))
	must(t, os.WriteFile(filepath.Join(dir, "d", "f"), pattern(1000), 0o644))
	var st unix.Stat_t
	must(t, unix.Stat(filepath.Join(dir, "d", "f"), &st))
	rootFd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	must(t, err)
	defer unix.Close(rootFd)
	im := &importer{dir: dir, rootFd: rootFd, opts: Options{Sink: newMemSink()}}
	j := &job{node: &tree.Node{}, rel: "d/f", id: devIno{st.Dev, st.Ino}, size: 1000}
	must(t, im.content(j))

	must(t, os.Remove(filepath.Join(dir, "d", "f")))
	must(t, os.Symlink(filepath.Join(base, "victim"), filepath.Join(dir, "d", "f")))
	if err := im.content(j); err == nil || !strings.Contains(err.Error(), "symlink") {
		t.Errorf("file swapped for a symlink: err = %v", err)
	}
	must(t, os.RemoveAll(filepath.Join(dir, "d")))
	must(t, os.Mkdir(filepath.Join(base, "d2"), 0o755))
	must(t, os.WriteFile(filepath.Join(base, "d2", "f"), pattern(1000), 0o644))
	must(t, os.Symlink(filepath.Join(base, "d2"), filepath.Join(dir, "d")))
	if err := im.content(j); err == nil || !strings.Contains(err.Error(), "symlink") {
		t.Errorf("parent swapped for a symlink: err = %v", err)
	}
	must(t, os.Remove(filepath.Join(dir, "d")))
	must(t, os.Mkdir(filepath.Join(dir, "d"), 0o755))
	must(t, os.WriteFile(filepath.Join(dir, "d", "f"), pattern(1000), 0o644))
	if err := im.content(j); err == nil || !strings.Contains(err.Error(), "changed") {
		t.Errorf("file replaced by another inode: err = %v", err)
	}
}

func TestErrors(t *testing.T) {
	if _, err := Import(context.Background(), t.TempDir(), Options{SkipXattrs: true, UserXattrs: true}); err == nil {
		t.Error("SkipXattrs+UserXattrs accepted")
	}
	if _, err := Import(context.Background(), filepath.Join(t.TempDir(), "missing"), Options{}); err == nil {
		t.Error("missing directory accepted")
	}
	f := filepath.Join(t.TempDir(), "file")
	must(t, os.WriteFile(f, nil, 0o644))
	if _, err := Import(context.Background(), f, Options{}); err == nil {
		t.Error("a file accepted as the root")
	}
	fx := makeFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Import(ctx, fx.dir, Options{}); err == nil {
		t.Error("cancelled context ignored")
	}
	if os.Geteuid() != 0 {
		must(t, os.Chmod(filepath.Join(fx.dir, "z"), 0))
		_, err := Import(context.Background(), fx.dir, Options{})
		if err == nil || !strings.Contains(err.Error(), "z") {
			t.Errorf("unreadable dir: %v", err)
		}
		must(t, os.Chmod(filepath.Join(fx.dir, "z"), 0o755))
	}
}

// TestImportIntoStore imports into a real cas.Store and checks every
// external file's object against the fsverity CLI and the source bytes.
func TestImportIntoStore(t *testing.T) {
	fx := makeFixture(t)
	store, err := cas.Create(t.TempDir())
	must(t, err)
	got, err := Import(context.Background(), fx.dir, Options{Sink: store, Threads: 2})
	must(t, err)
	must(t, store.Sync())
	n := 0
	_ = got.Walk(func(node *tree.Node) error {
		if node.LinkTo != nil || node.Payload == "" {
			return nil
		}
		n++
		d := [32]byte(node.Digest)
		if node.Payload != cas.Payload(d) {
			t.Errorf("%s: payload %s for digest %x", node.Path(), node.Payload, d)
		}
		obj := filepath.Join(store.ObjectsDir(), node.Payload)
		data, err := os.ReadFile(obj)
		if err != nil || !bytes.Equal(data, fx.files[strings.TrimPrefix(node.Path(), "/")]) {
			t.Errorf("%s: object %s: %v or content differs", node.Path(), obj, err)
		}
		if cli := fsverityCLI(t, obj); !bytes.Equal(cli, node.Digest) {
			t.Errorf("%s: digest %x, fsverity CLI on the object %x", node.Path(), node.Digest, cli)
		}
		return nil
	})
	if n != 4 {
		t.Errorf("%d external files, want 4", n)
	}
}
