package exporttest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sys/unix"

	"github.com/mossfs/mossfs/cas"
	"github.com/mossfs/mossfs/dirimport"
	"github.com/mossfs/mossfs/erofs"
	"github.com/mossfs/mossfs/fsverity"
	"github.com/mossfs/mossfs/internal/ocitest"
	"github.com/mossfs/mossfs/internal/state"
	"github.com/mossfs/mossfs/internal/testenv"
	"github.com/mossfs/mossfs/oci"
	"github.com/mossfs/mossfs/tree"
)

// makeSourceTree writes a directory with what a layer must carry:
// hardlinks, xattrs (user and security.capability), devices, a fifo,
// symlinks, long names, empty, inline-sized and large files, odd modes and
// owners, and a static busybox at bin/busybox with applet links.
func makeSourceTree(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "src")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	mkdir := func(p string, mode os.FileMode) { must(os.MkdirAll(filepath.Join(dir, p), mode)) }
	write := func(p string, data []byte, mode os.FileMode) {
		must(os.WriteFile(filepath.Join(dir, p), data, mode))
		must(os.Chmod(filepath.Join(dir, p), mode))
	}
	mkdir("bin", 0o755)
	mkdir("share/data/deep", 0o750)
	mkdir("lib", 0o755)
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Fatalf("static busybox (busybox-static): %v", err)
	}
	write("bin/busybox", bb, 0o755)
	for _, applet := range []string{"sh", "cat", "ls"} {
		must(os.Symlink("busybox", filepath.Join(dir, "bin", applet)))
	}
	write("share/data/empty", nil, 0o644)
	write("share/data/small", []byte("tiny\n"), 0o600)
	write("share/data/exactly64", []byte(strings.Repeat("6", 64)), 0o644)
	write("share/data/big", []byte(strings.Repeat("a large file's content\n", 5000)), 0o644)
	write("share/data/hello.txt", []byte("hello from a mossfs transaction\n"), 0o644)
	// Hardlinks: three names of one inode, across directories.
	write("share/data/linked", []byte(strings.Repeat("linked content\n", 10)), 0o640)
	must(os.Link(filepath.Join(dir, "share/data/linked"), filepath.Join(dir, "share/data/deep/linked2")))
	must(os.Link(filepath.Join(dir, "share/data/linked"), filepath.Join(dir, "share/linked3")))
	// Xattrs.
	must(unix.Setxattr(filepath.Join(dir, "share/data/big"), "user.mossfs.test", []byte("value\x00with nul"), 0))
	must(unix.Setxattr(filepath.Join(dir, "share/data/deep"), "user.dir", []byte("d"), 0))
	// security.capability v2 for cap_net_bind_service (bit 10), permitted.
	capv2 := []byte{0, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	write("bin/capable", []byte(strings.Repeat("#", 100)), 0o755)
	must(unix.Setxattr(filepath.Join(dir, "bin/capable"), "security.capability", capv2, 0))
	// Devices and a fifo.
	mkdir("dev-samples", 0o755)
	must(unix.Mknod(filepath.Join(dir, "dev-samples/null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
	must(unix.Mknod(filepath.Join(dir, "dev-samples/loop9"), unix.S_IFBLK|0o660, int(unix.Mkdev(7, 9))))
	must(unix.Mknod(filepath.Join(dir, "dev-samples/bigminor"), unix.S_IFCHR|0o600, int(unix.Mkdev(259, 70000))))
	must(unix.Mkfifo(filepath.Join(dir, "dev-samples/fifo"), 0o644))
	// Long names: a 255-byte name and a path past 100 and 255 bytes.
	long := strings.Repeat("n", 255)
	write("share/"+long, []byte("long name\n"), 0o644)
	deep := "share/" + strings.Repeat("d", 90) + "/" + strings.Repeat("e", 90) + "/" + strings.Repeat("f", 90)
	mkdir(deep, 0o755)
	write(deep+"/file-at-a-long-path", []byte(strings.Repeat("deep\n", 30)), 0o644)
	must(os.Symlink(strings.Repeat("../", 40)+"target-longer-than-100-bytes", filepath.Join(dir, "share/longlink")))
	// Owners and odd modes.
	write("share/owned", []byte(strings.Repeat("o", 70)), 0o4755)
	must(os.Lchown(filepath.Join(dir, "share/owned"), 1234, 5678))
	must(os.Lchown(filepath.Join(dir, "share/longlink"), 42, 43))
	mkdir("share/sticky", 0o1777)
	must(os.Chmod(filepath.Join(dir, "share/sticky"), 0o1777))
	// Fixed mtimes with nanoseconds, links included, deepest first.
	var paths []string
	filepath.Walk(dir, func(p string, _ os.FileInfo, _ error) error { paths = append(paths, p); return nil })
	for i := len(paths) - 1; i >= 0; i-- {
		ts := []unix.Timespec{{Sec: 1_700_000_000 + int64(i), Nsec: 123456789}, {Sec: 1_700_000_000 + int64(i), Nsec: int64(i) * 1000}}
		must(unix.UtimesNanoAt(unix.AT_FDCWD, paths[i], ts, unix.AT_SYMLINK_NOFOLLOW))
	}
	return dir
}

// composeTx composes transaction 1 of a new state root from the
// bash-completion stone and the source tree, and returns the root.
func composeTx(t *testing.T, bin, src string) string {
	t.Helper()
	root := filepath.Join(t.TempDir(), "moss")
	stone := testenv.SharedPath(t, "testdata", "stones", "bash-completion-2.11-1-1-x86_64.stone")
	out := run(t, nil, filepath.Join(bin, "moss-compose"), "compose", "-q", "--root", root, "--stone", stone, "--tree", src)
	if strings.TrimSpace(out) != "1" {
		t.Fatalf("compose printed %q", out)
	}
	return root
}

type exportResult struct {
	ManifestDigest string   `json:"manifest_digest"`
	ConfigDigest   string   `json:"config_digest"`
	DiffIDs        []string `json:"diff_ids"`
	Layers         []string `json:"layers"`
	Composefs      string   `json:"composefs_fsverity"`
}

func export(t *testing.T, bin, root, dest string, extra ...string) exportResult {
	t.Helper()
	return exportEnv(t, nil, bin, root, dest, extra...)
}

func exportEnv(t *testing.T, env []string, bin, root, dest string, extra ...string) exportResult {
	t.Helper()
	args := append([]string{"export", "--root", root, "--json", "1", dest}, extra...)
	out := run(t, env, filepath.Join(bin, "moss-compose"), args...)
	var r exportResult
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("export --json: %v\n%s", err, out)
	}
	return r
}

// txUsrTree returns transaction 1's image tree as an import sees it.
func txView(t *testing.T, root string) (*tree.Node, *state.Transaction) {
	t.Helper()
	s, err := state.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	tx, err := s.Get(1)
	if err != nil {
		t.Fatal(err)
	}
	usr, err := s.Tree(tx)
	if err != nil {
		t.Fatal(err)
	}
	rfs, err := oci.RootFS(usr)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := oci.OpenObjectDir(s.Store().ObjectsDir())
	if err != nil {
		t.Fatal(err)
	}
	defer objs.Close()
	view, err := importView(rfs, objs.Open)
	if err != nil {
		t.Fatal(err)
	}
	return view, tx
}

// importDir reads an extracted root filesystem back into a tree, the
// contents hashed into a scratch store; the root gets the metadata an
// import gives a layer's root.
func importDir(t *testing.T, dir string) *tree.Node {
	t.Helper()
	st, err := cas.Create(filepath.Join(t.TempDir(), "scratch"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := dirimport.Import(context.Background(), dir, dirimport.Options{Sink: st})
	if err != nil {
		t.Fatal(err)
	}
	got.Mode, got.UID, got.GID, got.Mtime, got.Xattrs = tree.TypeDir|0o755, 0, 0, tree.Timespec{}, nil
	got.Sort()
	return got
}

func composefsDigest(t *testing.T, root *tree.Node) string {
	t.Helper()
	img, err := erofs.BuildImage(root, erofs.DefaultWriteOptions())
	if err != nil {
		t.Fatal(err)
	}
	d := fsverity.Sum(img)
	return fmt.Sprintf("%x", d)
}

// ociLayoutManifest reads the manifest of the only image of an OCI layout.
func ociLayoutManifest(t *testing.T, dir string) (string, map[string]any) {
	t.Helper()
	var index struct {
		Manifests []struct {
			Digest string `json:"digest"`
		} `json:"manifests"`
	}
	data, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &index); err != nil || len(index.Manifests) != 1 {
		t.Fatalf("index.json: %v %s", err, data)
	}
	d := index.Manifests[0].Digest
	data, err = os.ReadFile(filepath.Join(dir, "blobs", "sha256", strings.TrimPrefix(d, "sha256:")))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	return d, m
}

// extractWithTar unpacks a layer blob with GNU tar (zstd or gzip through
// the zstd and gzip programs), xattrs and numeric owners kept.
func extractWithTar(t *testing.T, blob, dir string, filter string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	args := []string{"-x", "-p", "--numeric-owner", "--xattrs", "--xattrs-include=*", "-f", blob, "-C", dir}
	if filter != "" {
		args = append([]string{"-I", filter}, args...)
	}
	run(t, nil, "tar", args...)
}

// TestExportRoundTrip exports a transaction (the bash-completion stone plus
// a generated tree) to oci:, oci-archive: and docker-archive: in every
// compression (zstd:chunked with either chunking), and checks: the manifest digest is the same on a second
// run; GNU tar extracts the layer to the transaction's tree (modes,
// owners, mtimes, xattrs, hardlinks, devices, contents); the composefs
// image of the extraction has the digest the config's label carries.
func TestExportRoundTrip(t *testing.T) {
	needTools(t, "skopeo", "zstd")
	bin := binaries(t)
	src := makeSourceTree(t)
	root := composeTx(t, bin, src)
	want, tx := txView(t, root)
	wantDigest := composefsDigest(t, want)
	out := t.TempDir()

	layerOf := map[string]string{} // test name -> layer digest
	for _, comp := range []struct {
		name, filter, media string
		chunks              string
	}{
		{"zstd:chunked", "zstd", "application/vnd.oci.image.layer.v1.tar+zstd", ""},
		{"zstd:chunked", "zstd", "application/vnd.oci.image.layer.v1.tar+zstd", "rolling"},
		{"zstd", "zstd", "application/vnd.oci.image.layer.v1.tar+zstd", ""},
		{"gzip", "gzip", "application/vnd.oci.image.layer.v1.tar+gzip", ""},
	} {
		name := strings.ReplaceAll(comp.name, ":", "-")
		args := []string{"--compression", comp.name}
		if comp.chunks != "" {
			name += "-" + comp.chunks
			args = append(args, "--chunks", comp.chunks)
		}
		t.Run(name, func(t *testing.T) {
			base := filepath.Join(out, name)
			r1 := export(t, bin, root, "oci:"+base+"-a:latest", args...)
			r2 := export(t, bin, root, "oci:"+base+"-b:v2", args...)
			if r1.ManifestDigest != r2.ManifestDigest {
				t.Errorf("two exports: manifest %s vs %s", r1.ManifestDigest, r2.ManifestDigest)
			}
			layerOf[name] = r1.Layers[0]
			if r1.Composefs != wantDigest {
				t.Errorf("label %s, composefs image of the transaction's root filesystem %s", r1.Composefs, wantDigest)
			}
			d, m := ociLayoutManifest(t, base+"-a")
			if d != r1.ManifestDigest {
				t.Errorf("layout's manifest %s, export said %s", d, r1.ManifestDigest)
			}
			layers := m["layers"].([]any)
			if len(layers) != 1 {
				t.Fatalf("%d layers", len(layers))
			}
			layer := layers[0].(map[string]any)
			if layer["mediaType"] != comp.media {
				t.Errorf("layer media type %v", layer["mediaType"])
			}
			ann, _ := layer["annotations"].(map[string]any)
			if _, ok := ann["io.github.containers.zstd-chunked.manifest-checksum"]; ok != (comp.name == "zstd:chunked") {
				t.Errorf("zstd:chunked TOC annotation present=%v: %v", ok, ann)
			}
			// skopeo's view: label, architecture, the layer's digest.
			var insp struct {
				Labels       map[string]string
				Architecture string
				Layers       []string
			}
			if err := json.Unmarshal([]byte(run(t, nil, "skopeo", "inspect", "oci:"+base+"-a:latest")), &insp); err != nil {
				t.Fatal(err)
			}
			if insp.Labels[oci.LabelComposefs] != wantDigest || insp.Labels[oci.LabelUsr] != tx.Image {
				t.Errorf("skopeo inspect labels %v; want %s and %s", insp.Labels, wantDigest, tx.Image)
			}
			// GNU tar's extraction is the transaction's root filesystem.
			blob := filepath.Join(base+"-a", "blobs", "sha256", strings.TrimPrefix(r1.Layers[0], "sha256:"))
			ex := filepath.Join(t.TempDir(), "x")
			extractWithTar(t, blob, ex, comp.filter)
			got := importDir(t, ex)
			if err := tree.Equal(want, got); err != nil {
				t.Errorf("GNU tar's extraction differs from the transaction: %v", err)
			}
			if g := composefsDigest(t, got); g != r1.Composefs {
				t.Errorf("composefs digest of the extraction %s, label %s", g, r1.Composefs)
			}
		})
	}
	// The chunkings are two layers of one tar.
	if f, r := layerOf["zstd-chunked"], layerOf["zstd-chunked-rolling"]; f == "" || f == r {
		t.Errorf("zstd:chunked layers %q (files) and %q (rolling): want two layers", f, r)
	}
	// A chunking that is not one, or for a compression without chunks, is
	// refused with its name, before anything is written.
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--chunks", "bytes"}, `unknown zstd:chunked chunking "bytes"`},
		{[]string{"--compression", "gzip", "--chunks", "rolling"}, `chunking "rolling" is for zstd:chunked layers, not gzip`},
	} {
		dest := filepath.Join(out, "refused")
		cmd := exec.Command(filepath.Join(bin, "moss-compose"), append([]string{"export", "-q", "--root", root, "1", "oci:" + dest}, c.args...)...)
		msg, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(msg), c.want) {
			t.Errorf("export %v: %v, %s; want an error saying %s", c.args, err, msg, c.want)
		}
		if _, err := os.Stat(filepath.Join(dest, "index.json")); err == nil {
			t.Errorf("export %v: refused, but wrote a layout", c.args)
		}
	}

	// oci-archive: reproducible; docker-archive: the same diff_ids.
	a1 := export(t, bin, root, "oci-archive:"+filepath.Join(out, "a1.tar"))
	a2 := export(t, bin, root, "oci-archive:"+filepath.Join(out, "a2.tar"))
	if a1.ManifestDigest != a2.ManifestDigest {
		t.Errorf("oci-archive: manifest %s vs %s", a1.ManifestDigest, a2.ManifestDigest)
	}
	d1 := export(t, bin, root, "docker-archive:"+filepath.Join(out, "d1.tar")+":mossfs/os:1")
	var raw struct {
		RootFS struct {
			DiffIDs []string `json:"diff_ids"`
		} `json:"rootfs"`
		Config struct{ Labels map[string]string }
	}
	cfg := run(t, nil, "skopeo", "inspect", "--config", "docker-archive:"+filepath.Join(out, "d1.tar"))
	if err := json.Unmarshal([]byte(cfg), &raw); err != nil {
		t.Fatal(err)
	}
	if strings.Join(raw.RootFS.DiffIDs, ",") != strings.Join(d1.DiffIDs, ",") || strings.Join(a1.DiffIDs, ",") != strings.Join(d1.DiffIDs, ",") {
		t.Errorf("docker-archive diff_ids %v, export %v, oci-archive %v", raw.RootFS.DiffIDs, d1.DiffIDs, a1.DiffIDs)
	}
	if raw.Config.Labels[oci.LabelComposefs] != wantDigest {
		t.Errorf("docker-archive label %v", raw.Config.Labels)
	}
	// An archive is written beside its name and renamed over it once
	// whole: exporting another image (gzip layers) over a1.tar replaces it
	// and leaves nothing else; containers/image still refuses to add to a
	// docker archive, and the one there stays as it was.
	gz := export(t, bin, root, "oci-archive:"+filepath.Join(out, "a1.tar"), "--compression", "gzip")
	var seen struct{ Digest string }
	if err := json.Unmarshal([]byte(run(t, nil, "skopeo", "inspect", "oci-archive:"+filepath.Join(out, "a1.tar"))), &seen); err != nil || seen.Digest != gz.ManifestDigest || gz.ManifestDigest == a1.ManifestDigest {
		t.Errorf("oci-archive over an existing archive: skopeo sees %s (%v), the export wrote %s, the old one was %s", seen.Digest, err, gz.ManifestDigest, a1.ManifestDigest)
	}
	d1Before, err := os.ReadFile(filepath.Join(out, "d1.tar"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(bin, "moss-compose"), "export", "--root", root, "1", "docker-archive:"+filepath.Join(out, "d1.tar"))
	if msg, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(msg), "doesn't support modifying existing images") {
		t.Errorf("docker-archive over an existing archive: %v\n%s", err, msg)
	}
	if d1After, err := os.ReadFile(filepath.Join(out, "d1.tar")); err != nil || !bytes.Equal(d1After, d1Before) {
		t.Errorf("the docker archive changed after a refused export (%v)", err)
	}
	if left, _ := filepath.Glob(filepath.Join(out, ".*moss-export-*")); len(left) > 0 {
		t.Errorf("temporary archives left: %v", left)
	}

	// --usr-only: the /usr tree at the root.
	u := export(t, bin, root, "oci:"+filepath.Join(out, "usronly"), "--usr-only", "--compression", "gzip")
	blob := filepath.Join(out, "usronly", "blobs", "sha256", strings.TrimPrefix(u.Layers[0], "sha256:"))
	ex := filepath.Join(t.TempDir(), "u")
	extractWithTar(t, blob, ex, "gzip")
	got := importDir(t, ex)
	if got.Lookup("bin/busybox") == nil || got.Lookup("usr") != nil || got.Lookup("share/bash-completion") == nil {
		t.Errorf("--usr-only layer: bin/busybox %v, usr %v", got.Lookup("bin/busybox") != nil, got.Lookup("usr") != nil)
	}
}

// TestExportPodman pushes an exported OS transaction (bash-completion and a
// static busybox) to a loopback registry, pulls it with podman, runs
// busybox from it, checks skopeo's view of the label and that podman's
// mount of the image shows the transaction's tree.
func TestExportPodman(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("podman as root")
	}
	bin := binaries(t)
	reg := ocitest.StartRegistry(t)
	ce := ocitest.NewContainers(t, ocitest.Options{Registries: []string{reg.Host}})
	src := makeSourceTree(t)
	root := composeTx(t, bin, src)
	want, tx := txView(t, root)
	ref := reg.Name("mossfs/os:1")
	r := export(t, bin, root, "docker://"+ref, "--tls-verify=false", "--cmd", "/usr/bin/sh", "--env", "PATH=/usr/bin:/bin", "--label", "org.example=yes")
	r2 := export(t, bin, root, reg.Ref("mossfs/os:again"), "--tls-verify=false", "--cmd", "/usr/bin/sh", "--env", "PATH=/usr/bin:/bin", "--label", "org.example=yes")
	if r.ManifestDigest != r2.ManifestDigest {
		t.Errorf("two pushes: manifest %s vs %s", r.ManifestDigest, r2.ManifestDigest)
	}

	var insp struct {
		Digest string
		Labels map[string]string
	}
	if err := json.Unmarshal([]byte(ce.Skopeo(t, "inspect", "--tls-verify=false", "docker://"+ref)), &insp); err != nil {
		t.Fatal(err)
	}
	if insp.Digest != r.ManifestDigest || insp.Labels[oci.LabelComposefs] != r.Composefs || insp.Labels[oci.LabelUsr] != tx.Image || insp.Labels["org.example"] != "yes" {
		t.Errorf("skopeo inspect: %+v; export %+v", insp, r)
	}

	podmanOut(t, ce, "pull", "--tls-verify=false", "-q", ref)
	outp := podmanOut(t, ce, "run", "--rm", "--pull=never", ref, "/usr/bin/busybox", "cat", "/usr/share/data/hello.txt")
	if outp != "hello from a mossfs transaction\n" {
		t.Errorf("podman run printed %q", outp)
	}
	// The image's config: cmd and env reach the container.
	outp = podmanOut(t, ce, "run", "--rm", "--pull=never", ref, "sh", "-c", "echo $PATH; ls /bin/busybox")
	if outp != "/usr/bin:/bin\n/bin/busybox\n" {
		t.Errorf("podman run (merged /usr links, env) printed %q", outp)
	}

	// containers-storage: c/image applies the layer itself; the diff_id
	// is the export's and podman runs the image.
	cs := exportEnv(t, ce.Env, bin, root, "containers-storage:["+"overlay@"+ce.GraphRoot+"+"+ce.RunRoot+"]localhost/mossfs/cs:1", "--cmd", "/usr/bin/sh")
	if layers := strings.TrimSpace(podmanOut(t, ce, "image", "inspect", "--format", "{{range .RootFS.Layers}}{{.}} {{end}}", "localhost/mossfs/cs:1")); layers != strings.Join(cs.DiffIDs, " ") || cs.DiffIDs[0] != r.DiffIDs[0] {
		t.Errorf("containers-storage: podman's layers %q, export's diff_ids %v (docker:// %v)", layers, cs.DiffIDs, r.DiffIDs)
	}
	if outp := podmanOut(t, ce, "run", "--rm", "--pull=never", "localhost/mossfs/cs:1", "busybox", "cat", "/usr/share/data/hello.txt"); outp != "hello from a mossfs transaction\n" {
		t.Errorf("podman run of the containers-storage: export printed %q", outp)
	}

	// Pulled back by moss-oci from the registry and from podman's store:
	// the image the label names.
	if got, _ := pullBack(t, ce.Env, bin, "docker://"+ref, "--tls-verify=false"); got != r.Composefs {
		t.Errorf("docker:// pulled back: composefs image %s, label %s", got, r.Composefs)
	}
	if got, _ := pullBack(t, ce.Env, bin, "containers-storage:localhost/mossfs/cs:1"); got != cs.Composefs || got != r.Composefs {
		t.Errorf("containers-storage: pulled back: composefs image %s, labels %s and %s", got, cs.Composefs, r.Composefs)
	}

	mnt := strings.TrimSpace(podmanOut(t, ce, "image", "mount", ref))
	defer ce.PodmanErr("image", "unmount", ref)
	got := importDir(t, mnt)
	if err := tree.Equal(want, got); err != nil {
		t.Errorf("podman image mount differs from the transaction: %v", err)
	}
	// podman's usr/ is what mossfs mount shows of the transaction.
	mossMnt := filepath.Join(t.TempDir(), "usr")
	if err := os.Mkdir(mossMnt, 0o755); err != nil {
		t.Fatal(err)
	}
	run(t, nil, filepath.Join(bin, "mossfs"), "mount", "--root", root, "--driver", "overlay", "1", mossMnt)
	defer unix.Unmount(mossMnt, unix.MNT_DETACH)
	podmanUsr, mossUsr := importDir(t, filepath.Join(mnt, "usr")), importDir(t, mossMnt)
	if err := tree.Equal(mossUsr, podmanUsr); err != nil {
		t.Errorf("podman image mount's usr/ differs from mossfs mount: %v", err)
	}
	if mossUsr.Lookup("bin/busybox") == nil || mossUsr.Lookup(".stateID") == nil {
		t.Errorf("mossfs mount lacks bin/busybox or .stateID")
	}
}

func podmanOut(t *testing.T, ce *ocitest.Containers, args ...string) string {
	t.Helper()
	return string(ce.Podman(t, args...))
}

// layoutTags reads an OCI layout's index.json: manifest digest by tag.
func layoutTags(t *testing.T, dir string) map[string]string {
	t.Helper()
	var index struct {
		Manifests []struct {
			Digest      string            `json:"digest"`
			Annotations map[string]string `json:"annotations"`
		} `json:"manifests"`
	}
	data, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &index); err != nil {
		t.Fatalf("index.json: %v %s", err, data)
	}
	tags := map[string]string{}
	for _, m := range index.Manifests {
		tags[m.Annotations[v1.AnnotationRefName]] = m.Digest
	}
	return tags
}

// TestExportLayoutIndex: an export into an oci: layout that holds other
// images keeps them; its index.json is replaced (renamed over: another
// inode), not written in place, and nothing is left beside it; exports
// into one layout at the same time all keep their tags (the layout is
// locked while each writes its index); skopeo reads every tag.
func TestExportLayoutIndex(t *testing.T) {
	needTools(t, "skopeo")
	bin := binaries(t)
	root := composeTx(t, bin, makeSourceTree(t))
	dir := filepath.Join(t.TempDir(), "layout")

	a := export(t, bin, root, "oci:"+dir+":a")
	var st1 unix.Stat_t
	if err := unix.Stat(filepath.Join(dir, "index.json"), &st1); err != nil {
		t.Fatal(err)
	}
	b := export(t, bin, root, "oci:"+dir+":b", "--compression", "gzip")
	var st2 unix.Stat_t
	if err := unix.Stat(filepath.Join(dir, "index.json"), &st2); err != nil {
		t.Fatal(err)
	}
	if st1.Ino == st2.Ino {
		t.Error("index.json was written in place, not replaced")
	}
	if tags := layoutTags(t, dir); tags["a"] != a.ManifestDigest || tags["b"] != b.ManifestDigest || len(tags) != 2 {
		t.Errorf("tags %v; want a=%s b=%s", tags, a.ManifestDigest, b.ManifestDigest)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if n := e.Name(); n != "blobs" && n != "index.json" && n != "oci-layout" {
			t.Errorf("left in the layout: %s", n)
		}
	}

	// Four exports at once into another layout.
	dir2 := filepath.Join(t.TempDir(), "layout2")
	errs := make(chan error, 4)
	for i := range 4 {
		go func() {
			out, err := exec.Command(filepath.Join(bin, "moss-compose"), "export", "-q", "--root", root, "1", fmt.Sprintf("oci:%s:t%d", dir2, i)).CombinedOutput()
			if err != nil {
				err = fmt.Errorf("export t%d: %v\n%s", i, err, out)
			}
			errs <- err
		}()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	tags := layoutTags(t, dir2)
	if len(tags) != 4 {
		t.Errorf("four exports at once left the tags %v", tags)
	}
	for tag, d := range tags {
		var insp struct{ Digest string }
		if err := json.Unmarshal([]byte(run(t, nil, "skopeo", "inspect", "oci:"+dir2+":"+tag)), &insp); err != nil || insp.Digest != d {
			t.Errorf("skopeo inspect %s: %v %q, index says %s", tag, err, insp.Digest, d)
		}
	}
}
