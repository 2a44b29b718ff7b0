package sharetest

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mossfs/mossfs/cas"
	"github.com/mossfs/mossfs/dirimport"
	"github.com/mossfs/mossfs/erofs"
	"github.com/mossfs/mossfs/fsverity"
	"github.com/mossfs/mossfs/internal/ocitest"
	"github.com/mossfs/mossfs/internal/testenv"
	"github.com/mossfs/mossfs/tree"
	"golang.org/x/sys/unix"
)

// composefsSource writes the source tree of the composefs test: several
// layers' worth of files with hardlinks (three names, two directories),
// xattrs (user.*, security.capability, binary values), a character
// device, a fifo, symlinks, setuid and sticky modes, owners, a 255-byte
// name, empty, small and large files, nanosecond mtimes. layerOf says in
// which layer (0, 1, 2) each non-directory entry goes.
func composefsSource(t *testing.T) (dir string, layerOf func(rel string) int) {
	t.Helper()
	dir = filepath.Join(t.TempDir(), "src")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	mkdir := func(p string, mode os.FileMode) {
		must(os.MkdirAll(filepath.Join(dir, p), 0o755))
		must(os.Chmod(filepath.Join(dir, p), mode))
	}
	write := func(p string, data []byte, mode os.FileMode) {
		must(os.WriteFile(filepath.Join(dir, p), data, 0o600))
		must(os.Chmod(filepath.Join(dir, p), mode))
	}
	big := make([]byte, 300<<10)
	for i := range big {
		big[i] = byte(i*7 + i/251)
	}
	// Layer 0: usr/bin, usr/lib, etc, dev.
	mkdir("usr/bin", 0o755)
	mkdir("usr/lib", 0o755)
	mkdir("etc", 0o755)
	mkdir("dev", 0o755)
	write("usr/bin/tool", []byte("#!/bin/sh\necho tool\n"), 0o755)
	must(os.Symlink("tool", filepath.Join(dir, "usr/bin/alias")))
	write("usr/lib/libbig.so", big, 0o644)
	write("etc/conf", []byte("secret=1\n"), 0o600)
	must(os.Lchown(filepath.Join(dir, "etc/conf"), 12, 34))
	must(unix.Mknod(filepath.Join(dir, "dev/null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
	// Layer 1: usr/share with hardlinks, xattrs, odd modes.
	mkdir("usr/share/doc/sub", 0o755)
	write("usr/share/doc/README", []byte(strings.Repeat("read me\n", 100)), 0o644)
	must(os.Link(filepath.Join(dir, "usr/share/doc/README"), filepath.Join(dir, "usr/share/doc/README.link")))
	must(os.Link(filepath.Join(dir, "usr/share/doc/README"), filepath.Join(dir, "usr/share/doc/sub/README.again")))
	write("usr/share/capable", []byte(strings.Repeat("#", 100)), 0o755)
	// security.capability v2: cap_net_bind_service permitted.
	must(unix.Setxattr(filepath.Join(dir, "usr/share/capable"), "security.capability", []byte{0, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, 0))
	write("usr/share/suid", []byte("suid\n"), 0o4755)
	write("usr/share/empty", nil, 0o644)
	write("usr/share/"+strings.Repeat("n", 255), []byte("long name\n"), 0o644)
	must(unix.Setxattr(filepath.Join(dir, "usr/share/doc"), "user.dir", []byte("a directory's xattr"), 0))
	// Layer 2: data, owned by someone else, a fifo, binary xattrs.
	mkdir("data/tmp", 0o1777)
	must(os.Lchown(filepath.Join(dir, "data"), 1000, 1000))
	write("data/a.txt", []byte("a\n"), 0o640)
	must(os.Lchown(filepath.Join(dir, "data/a.txt"), 1000, 100))
	must(unix.Setxattr(filepath.Join(dir, "data/a.txt"), "user.note", []byte("hello"), 0))
	must(unix.Setxattr(filepath.Join(dir, "data/a.txt"), "user.bin", []byte("\x00\x01=\xff\n "), 0))
	must(unix.Mkfifo(filepath.Join(dir, "data/fifo"), 0o620))
	must(os.Symlink("../usr/lib/libbig.so", filepath.Join(dir, "data/lib")))
	// Mtimes with nanoseconds, children first.
	var paths []string
	filepath.Walk(dir, func(p string, _ os.FileInfo, _ error) error { paths = append(paths, p); return nil })
	for i := len(paths) - 1; i >= 0; i-- {
		ts := []unix.Timespec{{Sec: 1_700_000_000 + int64(i)*1000, Nsec: 123456789}, {Sec: 1_700_000_000 + int64(i)*1000, Nsec: int64(i) * 1000}}
		must(unix.UtimesNanoAt(unix.AT_FDCWD, paths[i], ts, unix.AT_SYMLINK_NOFOLLOW))
	}
	return dir, func(rel string) int {
		switch {
		case strings.HasPrefix(rel, "usr/share/"):
			return 1
		case strings.HasPrefix(rel, "data/"):
			return 2
		}
		return 0
	}
}

// layerTar writes the entries of src that belong in layer n (and every
// directory on their way, with its own metadata) as a PAX tar in name
// order, xattrs as SCHILY.xattr records, later names of an inode as
// hardlinks to its first. extra (regular files) are written last.
func layerTar(t *testing.T, src string, n int, layerOf func(string) int, extra ...ocitest.Entry) []byte {
	t.Helper()
	var rels []string
	filepath.Walk(src, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(src, p)
		if rel != "." && !fi.IsDir() && layerOf(filepath.ToSlash(rel)) == n {
			rels = append(rels, filepath.ToSlash(rel))
		}
		return nil
	})
	include := map[string]bool{}
	for _, r := range rels {
		include[r] = true
		for d := filepath.Dir(r); d != "."; d = filepath.Dir(d) {
			include[d] = true
		}
	}
	// Empty directories of the layer's part.
	filepath.Walk(src, func(p string, fi os.FileInfo, _ error) error {
		rel, _ := filepath.Rel(src, p)
		if fi.IsDir() && rel != "." && layerOf(filepath.ToSlash(rel)+"/") == n {
			for d := rel; d != "."; d = filepath.Dir(d) {
				include[filepath.ToSlash(d)] = true
			}
		}
		return nil
	})
	names := make([]string, 0, len(include))
	for k := range include {
		names = append(names, k)
	}
	sort.Strings(names)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	type ino struct{ dev, ino uint64 }
	seen := map[ino]string{}
	for _, rel := range names {
		p := filepath.Join(src, rel)
		fi, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		target := ""
		if fi.Mode()&os.ModeSymlink != 0 {
			target, _ = os.Readlink(p)
		}
		h, err := tar.FileInfoHeader(fi, target)
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		h.Name, h.Uname, h.Gname, h.Format = rel, "", "", tar.FormatPAX
		h.AccessTime, h.ChangeTime = time.Time{}, time.Time{}
		if fi.IsDir() {
			h.Name += "/"
		}
		if fi.Mode().IsRegular() && st.Nlink > 1 {
			k := ino{st.Dev, st.Ino}
			if first, ok := seen[k]; ok {
				h.Typeflag, h.Linkname, h.Size = tar.TypeLink, first, 0
			} else {
				seen[k] = rel
			}
		}
		xs, err := xattrs(p, nil)
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range xs {
			if h.PAXRecords == nil {
				h.PAXRecords = map[string]string{}
			}
			h.PAXRecords["SCHILY.xattr."+k] = v
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			f, err := os.Open(p)
			if err != nil {
				t.Fatal(err)
			}
			_, err = io.Copy(tw, f)
			f.Close()
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, e := range extra {
		h := &tar.Header{Name: e.Name, Typeflag: tar.TypeReg, Mode: e.Mode, Size: int64(len(e.Body)),
			ModTime: time.Unix(1_600_000_000, 0), Format: tar.FormatPAX}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(e.Body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestComposefsHelper: containers/storage (go.podman.io/storage v1.65)
// with use_composefs=true finds our mkcomposefs (moss-compose) first on
// PATH, pulls zstd:chunked images of several layers from the loopback
// registry (partially: composefs layers come only from partial pulls),
// builds each layer's composefs image with it, and mounts the images with
// MountImage: the mount equals the source tree (names, types, modes,
// owners, xattrs, contents, hardlinks, devices, mtimes). A layer with OCI
// whiteouts shows what containers/storage itself does with them there.
func TestComposefsHelper(t *testing.T) {
	testenv.RequireMountNS(t)
	bin := binaries(t)
	t.Setenv("PATH", bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	if p, err := exec.LookPath("mkcomposefs"); err != nil || p != filepath.Join(bin, "mkcomposefs") {
		t.Fatalf("mkcomposefs on PATH is %q (%v), want ours in %s", p, err, bin)
	}
	src, layerOf := composefsSource(t)
	// Layer 0 also holds an older usr/bin/tool that layer 2 replaces.
	var layers [][]byte
	for n := 0; n < 3; n++ {
		layers = append(layers, layerTar(t, src, n, layerOf))
	}
	layers[2] = layerTar(t, src, 2, func(rel string) int {
		if rel == "usr/bin/tool" {
			return 2
		}
		return layerOf(rel)
	})
	layers[0] = layerTar(t, src, 0, func(rel string) int {
		if rel == "usr/bin/tool" {
			return -1
		}
		return layerOf(rel)
	}, ocitest.Entry{Name: "usr/bin/tool", Mode: 0o700, Body: "an older tool\n"})

	reg := ocitest.StartRegistry(t)
	f := &dedupFixture{Reg: reg}
	dir := t.TempDir()
	f.RegConf = filepath.Join(dir, "registries.conf")
	os.WriteFile(f.RegConf, []byte("unqualified-search-registries = []\n[[registry]]\nlocation = \""+reg.Host+"\"\ninsecure = true\n"), 0o600)
	f.Sys = sysContext(dir, f.RegConf)
	lay := filepath.Join(dir, "layout")
	// Both images go to the registry as moss-oci export writes them (our
	// zstd:chunked writer, the composefs label of the merged tree).
	ocitest.NewContainers(t, ocitest.Options{Registries: []string{reg.Host}}) // the blob-info cache on a tmpfs
	ocitest.WriteLayout(t, lay, "layers", ocitest.Image{Layers: layers})
	label := exportImage(t, bin, lay, "layers", reg.Ref("cfs/layers:1"))
	// Whiteouts: layer 0, then a layer removing data/a.txt (a whiteout)
	// and making usr/lib opaque with one new file in it.
	wh := ocitest.Tar(t,
		ocitest.Entry{Name: "data/", Type: tar.TypeDir, Mode: 0o755},
		ocitest.Entry{Name: "data/.wh.a.txt"},
		ocitest.Entry{Name: "usr/", Type: tar.TypeDir, Mode: 0o755},
		ocitest.Entry{Name: "usr/lib/", Type: tar.TypeDir, Mode: 0o755},
		ocitest.Entry{Name: "usr/lib/.wh..wh..opq"},
		ocitest.Entry{Name: "usr/lib/new.so", Body: "new library\n"},
	)
	ocitest.WriteLayout(t, lay, "whiteouts", ocitest.Image{Layers: [][]byte{layerTar(t, src, 0, func(string) int { return 0 }), wh}})
	whLabel := exportImage(t, bin, lay, "whiteouts", reg.Ref("cfs/whiteouts:1"))

	storeDir := t.TempDir()
	store := openStore(t, storageConf(t, storeDir, `[storage.options.overlay]
use_composefs = "true"

[storage.options.pull_options]
enable_partial_images = "true"
`))
	want, err := readDir(src)
	if err != nil {
		t.Fatal(err)
	}

	id := storagePull(t, f, store, "cfs/layers:1")
	img, err := store.Image(id)
	if err != nil {
		t.Fatal(err)
	}
	blobs, _ := filepath.Glob(filepath.Join(storeDir, "graph", "overlay", "*", "composefs-data", "composefs.blob"))
	if len(blobs) != 3 {
		t.Errorf("%d composefs images in the store (%v), want one per layer (3)", len(blobs), blobs)
	}
	mnt, err := store.MountImage(img.ID, nil, "")
	if err != nil {
		t.Fatalf("MountImage: %v", err)
	}
	if !isComposefsMount(t, mnt) {
		t.Errorf("%s is not an overlay over EROFS (composefs) mounts", mnt)
	}
	got, err := readDir(mnt, "trusted.overlay.")
	if err != nil {
		t.Fatal(err)
	}
	if d, _ := diffTrees(want, got, true); len(d) > 0 {
		t.Errorf("composefs mount of cfs/layers:1 differs from the source tree:\n%s", strings.Join(d, "\n"))
	}
	// The export's label names the composefs image of this mount (the
	// tree image pull's applier merges is the one containers/storage shows).
	if d := composefsDigestOf(t, mnt); d != label {
		t.Errorf("composefs mount of cfs/layers:1: composefs digest %s, the export's label %s", d, label)
	}
	store.UnmountImage(img.ID, true)

	// Whiteouts: what OCI says the image holds, and what
	// containers/storage's composefs mount shows.
	id = storagePull(t, f, store, "cfs/whiteouts:1")
	mnt, err = store.MountImage(id, nil, "")
	if err != nil {
		t.Fatalf("MountImage: %v", err)
	}
	defer store.UnmountImage(id, true)
	got, err = readDir(mnt, "trusted.overlay.")
	if err != nil {
		t.Fatal(err)
	}
	var present []string
	for _, p := range []string{"data/a.txt", "data/.wh.a.txt", "usr/lib/libbig.so", "usr/lib/.wh..wh..opq", "usr/lib/new.so"} {
		if n, ok := got[p]; ok {
			present = append(present, p+" ("+n.Type+")")
		}
	}
	t.Logf("whiteouts in a use_composefs pull: the mount shows %v; its composefs digest %s, the export's label (whiteouts applied) %s",
		present, composefsDigestOf(t, mnt), whLabel)
	// OCI: data/a.txt and usr/lib/libbig.so are gone, no .wh. name is
	// visible. containers/storage v1.65 in composefs mode does not apply
	// whiteouts (README and the closing note say so; our mkcomposefs
	// writes the dump it is given): the whiteout files are plain empty
	// files and what they should hide stays.
	wantPresent := []string{"data/a.txt (reg)", "data/.wh.a.txt (reg)", "usr/lib/libbig.so (reg)", "usr/lib/.wh..wh..opq (reg)", "usr/lib/new.so (reg)"}
	if !slices.Equal(present, wantPresent) {
		t.Errorf("containers/storage's composefs mount now shows %v of the whiteout paths (was %v): whiteout handling changed, update README", present, wantPresent)
	}
}

// exportImage pulls the image tag of the OCI layout lay into a store of
// its own and exports it as itself to dest with moss-oci, returning the
// composefs label of the export.
func exportImage(t *testing.T, bin, lay, tag, dest string) string {
	t.Helper()
	dir := t.TempDir()
	policy := filepath.Join(dir, "policy.json")
	if err := os.WriteFile(policy, []byte(`{"default":[{"type":"insecureAcceptAnything"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(dir, "moss")
	run(t, filepath.Join(bin, "moss-oci"), "image", "pull", "-q", "--root", root, "--signature-policy", policy, "--name", tag+":1", "oci:"+lay+":"+tag)
	var res struct {
		Composefs string `json:"composefs_fsverity"`
	}
	out := run(t, filepath.Join(bin, "moss-oci"), "export", "--json", "--root", root, "--tls-verify=false", tag+":1", dest)
	if err := json.Unmarshal([]byte(out), &res); err != nil || res.Composefs == "" {
		t.Fatalf("export --json: %v\n%s", err, out)
	}
	return res.Composefs
}

// composefsDigestOf is the fs-verity digest of the composefs image of the
// tree below dir, its root as an image's (0755, root's, no mtime).
func composefsDigestOf(t *testing.T, dir string) string {
	t.Helper()
	st, err := cas.Create(filepath.Join(t.TempDir(), "scratch"))
	if err != nil {
		t.Fatal(err)
	}
	root, err := dirimport.Import(context.Background(), dir, dirimport.Options{Sink: st})
	if err != nil {
		t.Fatal(err)
	}
	root.Mode, root.UID, root.GID, root.Mtime, root.Xattrs = tree.TypeDir|0o755, 0, 0, tree.Timespec{}, nil
	root.Sort()
	img, err := erofs.BuildImage(root, erofs.DefaultWriteOptions())
	if err != nil {
		t.Fatal(err)
	}
	d := fsverity.Sum(img)
	return hex.EncodeToString(d[:])
}

// isComposefsMount reports whether mnt is an overlay mount whose lower
// layers are containers/storage's composefs (EROFS) mounts, read from
// /proc/self/mountinfo (the EROFS mounts themselves are detached once the
// overlay holds them).
func isComposefsMount(t *testing.T, mnt string) bool {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		sep := slices.Index(f, "-")
		if len(f) < 5 || sep < 0 || sep+3 >= len(f) || f[4] != mnt {
			continue
		}
		if f[sep+1] == "overlay" && strings.Contains(f[sep+3], "composefs-layers") {
			return true
		}
		t.Logf("mount at %s: %s", mnt, line)
	}
	return false
}
