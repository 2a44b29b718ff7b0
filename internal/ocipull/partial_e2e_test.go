package ocipull

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mossfs/mossfs/internal/gentree"
	"github.com/mossfs/mossfs/internal/ocitest"
	"github.com/mossfs/mossfs/internal/state"
	"github.com/mossfs/mossfs/oci/chunked"
	"go.podman.io/image/v5/copy"
	"go.podman.io/image/v5/docker"
	"go.podman.io/image/v5/docker/reference"
	"go.podman.io/image/v5/manifest"
	"go.podman.io/image/v5/oci/layout"
	"go.podman.io/image/v5/pkg/blobinfocache/none"
	"go.podman.io/image/v5/pkg/compression"
	"go.podman.io/image/v5/signature"
	"go.podman.io/image/v5/types"
)

// genEntries is the generated tree as test layer entries; with changed,
// every tenth regular file has other content.
func genEntries(spec gentree.Spec, changed bool) []ocitest.Entry {
	var out []ocitest.Entry
	for _, f := range gentree.List(spec) {
		switch f.Mode & 0o170000 {
		case 0o040000:
			out = append(out, ocitest.Entry{Name: f.Path + "/", Type: tar.TypeDir})
		case 0o120000:
			out = append(out, ocitest.Entry{Name: f.Path, Type: tar.TypeSymlink, Linkname: f.Target})
		default:
			src := f
			if changed && f.Index%10 == 0 {
				src.Index += 1 << 30
			}
			out = append(out, ocitest.Entry{Name: f.Path, Mode: int64(f.Mode & 0o7777), Body: string(gentree.Content(src))})
		}
	}
	return out
}

// pushZstdChunked copies an image from an OCI layout to the registry with
// containers/image, compressing its layers to zstd:chunked (the current
// format, with tar-split: skopeo 1.9 from Debian writes the older one).
func pushZstdChunked(t testing.TB, layoutDir, tag string, dest reference.Named, sys *types.SystemContext) {
	src, err := layout.NewReference(layoutDir, tag)
	if err != nil {
		t.Fatal(err)
	}
	dst, err := docker.NewReference(dest)
	if err != nil {
		t.Fatal(err)
	}
	policy, _ := signature.NewPolicyFromBytes([]byte(`{"default":[{"type":"insecureAcceptAnything"}]}`))
	pc, err := signature.NewPolicyContext(policy)
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Destroy()
	dctx := *sys
	if dctx.CompressionFormat == nil {
		dctx.CompressionFormat = &compression.ZstdChunked
	}
	if _, err := copy.Image(context.Background(), pc, dst, src, &copy.Options{DestinationCtx: &dctx, ForceCompressionFormat: true, ReportWriter: io.Discard}); err != nil {
		t.Fatalf("copy to %s: %v", dest, err)
	}
}

// layersOf reads an image's manifest and config from the registry.
func layersOf(t testing.TB, ref reference.Named, sys *types.SystemContext) ([]chunked.Descriptor, []byte) {
	ir, err := docker.NewReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	src, err := ir.NewImageSource(context.Background(), sys)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	mb, _, err := src.GetManifest(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	m, err := manifest.OCI1FromManifest(mb)
	if err != nil {
		t.Fatal(err)
	}
	rc, _, err := src.GetBlob(context.Background(), types.BlobInfo{Digest: m.Config.Digest, Size: m.Config.Size}, none.NoCache)
	if err != nil {
		t.Fatal(err)
	}
	cb, _ := io.ReadAll(rc)
	rc.Close()
	var cfg struct {
		RootFS struct {
			DiffIDs []string `json:"diff_ids"`
		} `json:"rootfs"`
	}
	if err := json.Unmarshal(cb, &cfg); err != nil {
		t.Fatal(err)
	}
	var out []chunked.Descriptor
	for i, l := range m.Layers {
		out = append(out, chunked.Descriptor{Digest: l.Digest.String(), Size: l.Size, Annotations: l.Annotations, DiffID: cfg.RootFS.DiffIDs[i]})
	}
	return out, mb
}

// mapSource is a ContentSource over contents kept in memory.
type mapSource map[[32]byte][]byte

func (m mapSource) HasSHA256(d [32]byte) bool { _, ok := m[d]; return ok }
func (m mapSource) OpenSHA256(d [32]byte) (io.ReadCloser, error) {
	b, ok := m[d]
	if !ok {
		return nil, os.ErrNotExist
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

// TestPartialPullBAfterA: images A and B (B shares 90% of A's files), made
// by containers/image in zstd:chunked and pushed to Debian's docker-registry,
// read partially through the client PartialRegistry configures from
// registries.conf; after A, B costs at most 15% of its compressed size,
// counted from the registry's access log, and its tar stream checks out
// against the diff_id in its config.
func TestPartialPullBAfterA(t *testing.T) {
	reg := ocitest.StartRegistry(t)
	dir := t.TempDir()
	conf := filepath.Join(dir, "registries.conf")
	os.WriteFile(conf, []byte(fmt.Sprintf("unqualified-search-registries = []\n[[registry]]\nlocation = %q\ninsecure = true\n", reg.Host)), 0o600)
	sys := &types.SystemContext{SystemRegistriesConfPath: conf, SystemRegistriesConfDirPath: filepath.Join(dir, "none"),
		AuthFilePath: filepath.Join(dir, "auth.json"), BlobInfoCacheDir: filepath.Join(dir, "cache")}
	os.WriteFile(sys.AuthFilePath, []byte(`{}`), 0o600)
	lay := filepath.Join(dir, "layout")
	tars := map[string][]byte{}
	for _, name := range []string{"a", "b"} {
		tb := ocitest.Tar(t, genEntries(gentree.Tiny, name == "b")...)
		tars[name] = tb
		ocitest.WriteLayout(t, lay, name, ocitest.Image{Layers: [][]byte{tb}})
		ref, _ := reference.ParseNormalizedNamed(reg.Name("partial/" + name + ":1"))
		pushZstdChunked(t, lay, name, ref, sys)
	}
	store := mapSource{}
	pull := func(name string) (chunked.Descriptor, chunked.Stats) {
		ref, _ := reference.ParseNormalizedNamed(reg.Name("partial/" + name + ":1"))
		descs, _ := layersOf(t, ref, sys)
		if len(descs) != 1 || descs[0].Annotations[chunked.AnnotationTarSplitPosition] == "" {
			t.Fatalf("%s: want one zstd:chunked layer with a tar-split, have %+v", name, descs)
		}
		r, err := PartialRegistry(sys, ref)
		if err != nil {
			t.Fatal(err)
		}
		l, err := chunked.Prepare(context.Background(), r.Blob(descs[0].Digest), descs[0], store, chunked.Options{TempDir: t.TempDir()})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		defer l.Close()
		rc := l.Tar()
		got, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !bytes.Equal(got, tars[name]) {
			t.Fatalf("%s: the rebuilt tar differs from the image's layer", name)
		}
		tr := tar.NewReader(bytes.NewReader(got))
		for {
			h, err := tr.Next()
			if err != nil {
				break
			}
			if h.Typeflag == tar.TypeReg {
				b, _ := io.ReadAll(tr)
				store[sha256.Sum256(b)] = b
			}
		}
		return descs[0], l.Stats()
	}
	da, sa := pull("a")
	db, sb := pull("b")
	bytesA, _ := reg.BlobBytes(t, "partial/a", da.Digest)
	bytesB, reqB := reg.BlobBytes(t, "partial/b", db.Digest)
	t.Logf("A: layer %d bytes, registry sent %d (%.1f%%), %+v", da.Size, bytesA, 100*float64(bytesA)/float64(da.Size), sa)
	t.Logf("B after A: layer %d bytes, registry sent %d (%.1f%%) in %d requests, %+v", db.Size, bytesB, 100*float64(bytesB)/float64(db.Size), reqB, sb)
	if bytesB > db.Size*15/100 {
		t.Errorf("B fetched %d bytes, more than 15%% of its %d", bytesB, db.Size)
	}
	if bytesA < da.Size*9/10 {
		t.Errorf("A, into an empty store, fetched only %d of %d bytes: the counting is off", bytesA, da.Size)
	}
}

// TestPullPartialBAfterA is the partial pull through image pull: image A,
// then image B sharing 90% of A's files, both zstd:chunked by
// containers/image, pulled from Debian's docker-registry with PartialLayers.
// B's layer costs at most 15% of its compressed size by the registry's
// access log, and the image it gives is the one a whole download gives (the
// same EROFS image digest, pulled into another store with WholeLayers).
func TestPullPartialBAfterA(t *testing.T) {
	reg := ocitest.StartRegistry(t)
	dir := t.TempDir()
	sys, policy := registryClient(t, reg, dir)
	lay := filepath.Join(dir, "layout")
	for _, name := range []string{"a", "b"} {
		ocitest.WriteLayout(t, lay, name, ocitest.Image{Layers: [][]byte{
			ocitest.Tar(t, ocitest.Entry{Name: "etc/", Type: tar.TypeDir}, ocitest.Entry{Name: "etc/image", Body: name + "\n"}),
			ocitest.Tar(t, genEntries(gentree.Tiny, name == "b")...),
		}})
		ref, _ := reference.ParseNormalizedNamed(reg.Name("pp/" + name + ":1"))
		pushZstdChunked(t, lay, name, ref, sys)
	}
	st, err := state.Create(filepath.Join(dir, "store"))
	if err != nil {
		t.Fatal(err)
	}
	pull := func(st *state.State, name string, f LayerFetcher) *PullResult {
		res, err := Pull(context.Background(), st, reg.Ref("pp/"+name+":1"), PullOptions{Sys: sys, PolicyPath: policy, Fetcher: f})
		if err != nil {
			t.Fatalf("pull %s: %v", name, err)
		}
		return res
	}
	resA := pull(st, "a", &PartialLayers{State: st, Sys: sys})
	if resA.Partial == nil || resA.Partial.PartialLayers != 2 || resA.Partial.FilesPresent != 0 {
		t.Fatalf("A: partial totals %+v, want both layers partial into an empty store", resA.Partial)
	}
	resB := pull(st, "b", &PartialLayers{State: st, Sys: sys})
	p := resB.Partial
	bigB := resB.Image.Layers[1]
	bytesB, reqs := reg.BlobBytes(t, "pp/b", bigB.Digest)
	t.Logf("B after A: layer %d bytes, registry sent %d (%.1f%%) in %d requests; partial totals %+v; pull result files %d present %d",
		bigB.Size, bytesB, 100*float64(bytesB)/float64(bigB.Size), reqs, *p, resB.Files, resB.FilesPresent)
	if bytesB > bigB.Size*15/100 {
		t.Errorf("B's layer cost %d bytes, more than 15%% of its %d", bytesB, bigB.Size)
	}
	// Files small enough to be inlined in the EROFS image are objects with
	// index links too (TestPullPartialInlineFilesPresent): only B's changed
	// files are fetched.
	if p.PartialLayers != 2 || p.FilesPresent < 4*p.FilesFetched || p.BytesSaved < 5*p.BytesFetched {
		t.Errorf("B: partial totals %+v, want most files and bytes present", p)
	}
	// A gzip image has no table of contents: PartialLayers downloads it
	// whole, and says why.
	gz := *sys
	gz.CompressionFormat = &compression.Gzip
	gref, _ := reference.ParseNormalizedNamed(reg.Name("pp/g:1"))
	ocitest.WriteLayout(t, lay, "g", ocitest.Image{Layers: [][]byte{
		ocitest.Tar(t, ocitest.Entry{Name: "etc/", Type: tar.TypeDir}, ocitest.Entry{Name: "etc/image", Body: "g\n"}),
		ocitest.Tar(t, ocitest.Entry{Name: "g", Body: "gzip\n"}),
	}})
	pushZstdChunked(t, lay, "g", gref, &gz)
	resG := pull(st, "g", &PartialLayers{State: st, Sys: sys})
	if g := resG.Partial; resG.AlreadyPresent || g == nil || g.PartialLayers != 0 || g.WholeLayers != 2 || len(g.Fallbacks) != 2 || !strings.Contains(g.Fallbacks[0], "no table of contents") {
		t.Errorf("gzip image: already present %v, partial totals %+v, want two whole layers for want of a TOC", resG.AlreadyPresent, g)
	}
	// The oracle: the same image pulled whole into another store.
	st2, err := state.Create(filepath.Join(dir, "store2"))
	if err != nil {
		t.Fatal(err)
	}
	whole := pull(st2, "b", WholeLayers{})
	if whole.Partial != nil || whole.Image.Image != resB.Image.Image || whole.Image.ConfigDigest != resB.Image.ConfigDigest {
		t.Errorf("partial pull gave image %s (config %s), whole download %s (config %s)", resB.Image.Image, resB.Image.ConfigDigest, whole.Image.Image, whole.Image.ConfigDigest)
	}
}
