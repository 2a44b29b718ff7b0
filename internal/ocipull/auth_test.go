package ocipull

import (
	"archive/tar"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mossfs/mossfs/internal/gentree"
	"github.com/mossfs/mossfs/internal/ocitest"
	"github.com/mossfs/mossfs/internal/state"
	"go.podman.io/image/v5/docker/reference"
	"go.podman.io/image/v5/types"
)

// TestPullPartialWithCredentials pulls a zstd:chunked image from Debian's
// docker-registry with htpasswd authentication. Without credentials the
// pull is refused, with a message saying so, and leaves no record; with
// them, PartialLayers reads both layers partially: its own range requests
// go through the registry's authentication too, as the registry's access
// log shows (206 responses for the layer blobs, not a whole download).
func TestPullPartialWithCredentials(t *testing.T) {
	reg := ocitest.StartRegistryWith(t, ocitest.RegistryOptions{Users: map[string]string{"moss": "s3cret"}})
	dir := t.TempDir()
	conf := filepath.Join(dir, "registries.conf")
	os.WriteFile(conf, []byte(fmt.Sprintf("unqualified-search-registries = []\n[[registry]]\nlocation = %q\ninsecure = true\n", reg.Host)), 0o600)
	policy := filepath.Join(dir, "policy.json")
	os.WriteFile(policy, []byte(`{"default":[{"type":"insecureAcceptAnything"}]}`), 0o600)
	anon := &types.SystemContext{SystemRegistriesConfPath: conf, SystemRegistriesConfDirPath: filepath.Join(dir, "none"),
		AuthFilePath: filepath.Join(dir, "auth.json"), BlobInfoCacheDir: filepath.Join(dir, "cache")}
	os.WriteFile(anon.AuthFilePath, []byte(`{}`), 0o600)
	authed := *anon
	authed.DockerAuthConfig = &types.DockerAuthConfig{Username: "moss", Password: "s3cret"}

	lay := filepath.Join(dir, "layout")
	ocitest.WriteLayout(t, lay, "a", ocitest.Image{Layers: [][]byte{
		ocitest.Tar(t, ocitest.Entry{Name: "etc/", Type: tar.TypeDir}, ocitest.Entry{Name: "etc/image", Body: "a\n"}),
		ocitest.Tar(t, genEntries(gentree.Tiny, false)...),
	}})
	ref, _ := reference.ParseNormalizedNamed(reg.Name("auth/a:1"))
	pushZstdChunked(t, lay, "a", ref, &authed)

	st, err := state.Create(filepath.Join(dir, "store"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = Pull(context.Background(), st, reg.Ref("auth/a:1"), PullOptions{Sys: anon, PolicyPath: policy, Fetcher: &PartialLayers{State: st, Sys: anon}})
	if err == nil || !strings.Contains(err.Error(), reg.Ref("auth/a:1")) ||
		!(strings.Contains(err.Error(), "authentication required") || strings.Contains(err.Error(), "unauthorized")) {
		t.Fatalf("pull without credentials: %v, want an authentication error naming the reference", err)
	}
	if all, err := st.Containers(); err != nil || len(all) != 0 {
		t.Fatalf("after the refused pull: records %v %v", all, err)
	}

	res, err := Pull(context.Background(), st, reg.Ref("auth/a:1"), PullOptions{Sys: &authed, PolicyPath: policy, Fetcher: &PartialLayers{State: st, Sys: &authed}})
	if err != nil {
		t.Fatalf("pull with credentials: %v", err)
	}
	if p := res.Partial; p == nil || p.PartialLayers != 2 || p.WholeLayers != 0 {
		t.Fatalf("partial totals %+v, want both layers read partially", res.Partial)
	}
	reg.Settle()
	var unauthorized int
	ranged := map[string]int{}
	for _, a := range reg.Accesses(t) {
		if a.Status == http.StatusUnauthorized {
			unauthorized++
		}
		if a.Method == http.MethodGet && a.Status == http.StatusPartialContent {
			ranged[a.Path]++
		}
	}
	for _, l := range res.Image.Layers {
		p := "/v2/auth/a/blobs/" + l.Digest
		if ranged[p] == 0 {
			t.Errorf("layer %s: no range request served (206) by the registry; ranged GETs %v", l.Digest, ranged)
		}
		if n, whole := reg.BlobBytes(t, "auth/a", l.Digest); whole == 0 || n == 0 {
			t.Errorf("layer %s: registry sent %d bytes in %d GETs", l.Digest, n, whole)
		}
	}
	if unauthorized == 0 {
		t.Errorf("the registry answered no request with 401: authentication was not in force")
	}
}
