package sharetest

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/mossfs/mossfs/internal/gentree"
	"github.com/mossfs/mossfs/internal/ocitest"
	"github.com/mossfs/mossfs/internal/testenv"
	"go.podman.io/image/v5/docker"
	"go.podman.io/image/v5/docker/reference"
	"go.podman.io/image/v5/signature"
	"go.podman.io/image/v5/types"
)

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// binaries builds moss-compose and moss-oci once per test binary (static,
// as make build does) into a directory that also holds the mkcomposefs
// link to moss-compose, and returns that directory.
func binaries(tb testing.TB) string {
	tb.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "sharetest-bin-")
		if buildErr != nil {
			return
		}
		cmd := exec.Command("go", "build", "-tags=containers_image_openpgp,exclude_graphdriver_btrfs", "-o", binDir+"/", "github.com/mossfs/mossfs/cmd/moss-compose", "github.com/mossfs/mossfs/cmd/moss-oci")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %w\n%s", err, out)
			return
		}
		buildErr = os.Symlink("moss-compose", filepath.Join(binDir, "mkcomposefs"))
	})
	if buildErr != nil {
		tb.Fatal(buildErr)
	}
	return binDir
}

func run(tb testing.TB, name string, args ...string) string {
	tb.Helper()
	cmd := exec.Command(name, args...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		tb.Fatalf("%s %s: %v\nstdout: %s\nstderr: %s", name, strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// dedupSpec sizes the generated part of transaction T: in make test a few
// MiB (its content does not compress, so the layer's table of contents and
// tar-split stay a small part of it), with MOSSFS_BENCH_FULL=1 gentree's
// Small tree (16 MiB, 1,300 entries).
func dedupSpec() gentree.Spec {
	if os.Getenv("MOSSFS_BENCH_FULL") == "1" {
		return gentree.Small
	}
	return gentree.Spec{Dirs: 8, Files: 200, Symlinks: 10, TotalBytes: 4 << 20, Seed: 11}
}

// dedupFixture is the OS store holding transaction T, and image B that
// shares 90% of T's files, in the loopback registry twice: as
// containers/image 5.42 writes zstd:chunked today (share/b-current:1) and
// as Debian's skopeo 1.9 (containers/image 5.23) writes it
// (share/b-skopeo19:1: no tar-split, io.containers.* annotations).
type dedupFixture struct {
	Root     string // state root holding T
	Index    string // Root/sha256: the ostree_repos value
	Reg      *ocitest.Registry
	Sys      *types.SystemContext // registries.conf with the registry insecure
	RegConf  string
	BTar     []byte  // B's (only) layer, uncompressed
	B        treeMap // what B holds
	Files    int     // regular files with content in T's layer
	Changed  int     // of those, changed in B
	Bytes    int64   // their content bytes in T
	ChBytes  int64   // content bytes of the changed ones
	Current  string  // repository:tag of B, current zstd:chunked
	Skopeo19 string  // repository:tag of B, skopeo 1.9's zstd:chunked
}

// newDedupFixture composes T from the bash-completion stone and a
// generated tree, exports it with moss-oci (into an OCI layout), changes the content of every tenth regular file of its layer
// (evenly across sizes: the files sorted by size, every tenth from the
// fifth) to make B, and pushes B to a new registry in both zstd:chunked
// variants.
func newDedupFixture(tb testing.TB, spec gentree.Spec) *dedupFixture {
	tb.Helper()
	bin := binaries(tb)
	dir := tb.TempDir()
	src := filepath.Join(dir, "src")
	if err := os.Mkdir(src, 0o755); err != nil {
		tb.Fatal(err)
	}
	if _, err := gentree.Materialize(src, spec); err != nil {
		tb.Fatal(err)
	}
	f := &dedupFixture{Root: filepath.Join(dir, "moss")}
	f.Index = filepath.Join(f.Root, "sha256")
	stone := testenv.SharedPath(tb, "testdata", "stones", "bash-completion-2.11-1-1-x86_64.stone")
	if out := run(tb, filepath.Join(bin, "moss-compose"), "compose", "-q", "--root", f.Root, "--stone", stone, "--tree", src); strings.TrimSpace(out) != "1" {
		tb.Fatalf("compose printed %q, want transaction 1", out)
	}
	lay := filepath.Join(dir, "t-layout")
	// --compression gzip: moss-oci's "none" is gzip-compressed by
	// containers/image on the way into an oci: layout anyway.
	run(tb, filepath.Join(bin, "moss-oci"), "export", "-q", "--root", f.Root, "--compression", "gzip", "1", "oci:"+lay+":t")
	tTar := onlyLayer(tb, lay)
	f.BTar = changeTenth(tb, tTar, f)
	var err error
	if f.B, err = readTar(f.BTar); err != nil {
		tb.Fatal(err)
	}
	bLay := filepath.Join(dir, "b-layout")
	ocitest.WriteLayout(tb, bLay, "b", ocitest.Image{Layers: [][]byte{f.BTar}, Cmd: []string{"/usr/bin/sh"}})

	f.Reg = ocitest.StartRegistry(tb)
	f.RegConf = filepath.Join(dir, "registries.conf")
	if err := os.WriteFile(f.RegConf, []byte(fmt.Sprintf("unqualified-search-registries = []\n[[registry]]\nlocation = %q\ninsecure = true\n", f.Reg.Host)), 0o600); err != nil {
		tb.Fatal(err)
	}
	f.Sys = sysContext(dir, f.RegConf)
	// skopeo and moss-oci through ocitest: its own policy and
	// registries.conf, and the blob-info cache on a tmpfs in this mount
	// namespace (never the host's).
	c := ocitest.NewContainers(tb, ocitest.Options{Registries: []string{f.Reg.Host}})
	// B in the current zstd:chunked format as moss-oci export writes it:
	// pulled into a store of its own and pushed as itself (its layer
	// rebuilt from the stored fragment by our zstd:chunked writer).
	f.Current = "share/b-current:1"
	bRoot := filepath.Join(dir, "b-store")
	policy := filepath.Join(dir, "policy.json")
	if err := os.WriteFile(policy, []byte(`{"default":[{"type":"insecureAcceptAnything"}]}`), 0o600); err != nil {
		tb.Fatal(err)
	}
	run(tb, filepath.Join(bin, "moss-oci"), "image", "pull", "-q", "--root", bRoot, "--signature-policy", policy, "--name", "b:1", "oci:"+bLay+":b")
	run(tb, filepath.Join(bin, "moss-oci"), "export", "-q", "--root", bRoot, "--tls-verify=false", "b:1", f.Reg.Ref(f.Current))
	f.Skopeo19 = "share/b-skopeo19:1"
	c.Skopeo(tb, "copy", "-q", "--dest-tls-verify=false", "--dest-compress-format", "zstd:chunked", "oci:"+bLay+":b", f.Reg.Ref(f.Skopeo19))
	return f
}

// sysContext is containers/image's configuration for the test: its
// registries.conf, an empty auth file, and a blob-info cache of its own in
// dir (a cache shared between runs could make a pull skip blobs).
func sysContext(dir, registriesConf string) *types.SystemContext {
	auth := filepath.Join(dir, "auth.json")
	os.WriteFile(auth, []byte("{}\n"), 0o600)
	return &types.SystemContext{
		SystemRegistriesConfPath:    registriesConf,
		SystemRegistriesConfDirPath: filepath.Join(dir, "no-registries.d"),
		AuthFilePath:                auth,
		BlobInfoCacheDir:            filepath.Join(dir, "blob-info-cache"),
	}
}

// onlyLayer returns the blob of the only layer of the only image of an OCI
// layout.
func onlyLayer(tb testing.TB, lay string) []byte {
	tb.Helper()
	blob := func(d string) []byte {
		b, err := os.ReadFile(filepath.Join(lay, "blobs", "sha256", strings.TrimPrefix(d, "sha256:")))
		if err != nil {
			tb.Fatal(err)
		}
		return b
	}
	var idx struct {
		Manifests []struct{ Digest string } `json:"manifests"`
	}
	b, err := os.ReadFile(filepath.Join(lay, "index.json"))
	if err != nil {
		tb.Fatal(err)
	}
	if err := json.Unmarshal(b, &idx); err != nil || len(idx.Manifests) != 1 {
		tb.Fatalf("%s/index.json: %v %s", lay, err, b)
	}
	var m struct {
		Layers []struct {
			MediaType string `json:"mediaType"`
			Digest    string `json:"digest"`
		} `json:"layers"`
	}
	if err := json.Unmarshal(blob(idx.Manifests[0].Digest), &m); err != nil || len(m.Layers) != 1 {
		tb.Fatalf("%s: manifest: %v %+v", lay, err, m)
	}
	data := blob(m.Layers[0].Digest)
	switch m.Layers[0].MediaType {
	case "application/vnd.oci.image.layer.v1.tar":
		return data
	case "application/vnd.oci.image.layer.v1.tar+gzip":
		zr, err := gzip.NewReader(bytes.NewReader(data))
		if err != nil {
			tb.Fatal(err)
		}
		out, err := io.ReadAll(zr)
		if err != nil {
			tb.Fatal(err)
		}
		return out
	}
	tb.Fatalf("%s: layer %s, want a tar or a gzip tar", lay, m.Layers[0].MediaType)
	return nil
}

// changeTenth rewrites a layer tar: the regular files with content, sorted
// by size (then name), every tenth from the fifth gets other content of
// the same size (each byte inverted, so it compresses alike). Everything
// else stays as it was, hardlinks included.
func changeTenth(tb testing.TB, layer []byte, f *dedupFixture) []byte {
	tb.Helper()
	type file struct {
		name string
		size int64
	}
	var files []file
	tr := tar.NewReader(bytes.NewReader(layer))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			tb.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg && h.Size > 0 {
			files = append(files, file{h.Name, h.Size})
			f.Bytes += h.Size
		}
	}
	sort.Slice(files, func(i, j int) bool {
		if files[i].size != files[j].size {
			return files[i].size < files[j].size
		}
		return files[i].name < files[j].name
	})
	change := map[string]bool{}
	for i := 5; i < len(files); i += 10 {
		change[files[i].name] = true
		f.ChBytes += files[i].size
	}
	f.Files, f.Changed = len(files), len(change)

	var out bytes.Buffer
	tw := tar.NewWriter(&out)
	tr = tar.NewReader(bytes.NewReader(layer))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			tb.Fatal(err)
		}
		body, err := io.ReadAll(tr)
		if err != nil {
			tb.Fatal(err)
		}
		if change[h.Name] {
			for i := range body {
				body[i] = ^body[i]
			}
		}
		if err := tw.WriteHeader(h); err != nil {
			tb.Fatal(err)
		}
		if _, err := tw.Write(body); err != nil {
			tb.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		tb.Fatal(err)
	}
	return out.Bytes()
}

// policyContext accepts anything (the loopback registry is the test's own).
func policyContext(tb testing.TB) *signature.PolicyContext {
	tb.Helper()
	policy, err := signature.NewPolicyFromBytes([]byte(`{"default":[{"type":"insecureAcceptAnything"}]}`))
	if err != nil {
		tb.Fatal(err)
	}
	pc, err := signature.NewPolicyContext(policy)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { pc.Destroy() })
	return pc
}

// layerOf returns the digest and size of the only layer of repo:tag in
// the registry, and its annotations.
func layerOf(tb testing.TB, reg *ocitest.Registry, sys *types.SystemContext, nameTag string) (string, int64, map[string]string) {
	tb.Helper()
	named, err := reference.ParseNormalizedNamed(reg.Name(nameTag))
	if err != nil {
		tb.Fatal(err)
	}
	ir, err := docker.NewReference(named)
	if err != nil {
		tb.Fatal(err)
	}
	src, err := ir.NewImageSource(context.Background(), sys)
	if err != nil {
		tb.Fatal(err)
	}
	defer src.Close()
	mb, _, err := src.GetManifest(context.Background(), nil)
	if err != nil {
		tb.Fatal(err)
	}
	var m struct {
		Layers []struct {
			Digest      string            `json:"digest"`
			Size        int64             `json:"size"`
			Annotations map[string]string `json:"annotations"`
		} `json:"layers"`
	}
	if err := json.Unmarshal(mb, &m); err != nil || len(m.Layers) != 1 {
		tb.Fatalf("%s: manifest %v %s", nameTag, err, mb)
	}
	return m.Layers[0].Digest, m.Layers[0].Size, m.Layers[0].Annotations
}

// blobBytes counts the bytes the registry sent for GETs of one blob after
// the access log's first `from` lines.
func blobBytes(tb testing.TB, reg *ocitest.Registry, from int, digest string) (int64, int) {
	tb.Helper()
	reg.Settle(tb)
	var n int64
	var reqs int
	for _, a := range reg.Accesses(tb)[from:] {
		if a.Method == "GET" && strings.HasSuffix(a.Path, "/blobs/"+digest) {
			n += a.Bytes
			reqs++
		}
	}
	return n, reqs
}

// mark is the access log's length now.
func mark(tb testing.TB, reg *ocitest.Registry) int {
	reg.Settle(tb)
	return len(reg.Accesses(tb))
}
