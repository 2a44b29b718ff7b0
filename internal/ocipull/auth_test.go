package ocipull

import (
	"archive/tar"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mossfs/mossfs/internal/gentree"
	"github.com/mossfs/mossfs/internal/ocitest"
	"github.com/mossfs/mossfs/internal/state"
	"github.com/mossfs/mossfs/oci/chunked"
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
	pullPartialWithAuth(t, reg, false)
}

// TestPullPartialWithBearerToken is TestPullPartialWithCredentials against
// Debian's docker-registry configured for the bearer-token flow (auth:
// token:, with a token server the test runs issuing JWTs signed with a key
// whose self-signed certificate is the registry's rootcertbundle): the
// partial pull's own range client (oci/chunked) gets a token from the realm
// with the credentials of auth.json/--creds and the registry accepts it,
// serving the layers' ranges with 206; without credentials the pull fails,
// saying so, and leaves nothing in the store. skopeo from Debian
// (containers/image) copies the image from the same registry too, which
// checks the token server independently of our client.
func TestPullPartialWithBearerToken(t *testing.T) {
	reg := ocitest.StartRegistryWith(t, ocitest.RegistryOptions{Users: map[string]string{"moss": "s3cret"}, Token: true})
	image := pullPartialWithAuth(t, reg, true)
	issued, refused := reg.Token.Counts()
	t.Logf("token server: %d tokens issued, %d requests refused", issued, refused)
	if issued == 0 || refused == 0 {
		t.Errorf("token server issued %d tokens and refused %d requests: the token flow was not in force", issued, refused)
	}

	// The registry checks the tokens' signatures: forged ones are refused.
	reg.Token.Forge(true)
	pc := &chunked.Registry{Host: reg.Host, Repository: "auth/a", Insecure: true, Username: "moss", Password: "s3cret"}
	if err := pc.Blob(image.Layers[0].Digest).ReadRanges(context.Background(), []chunked.Range{{Off: 0, Len: 16}}, func(chunked.Range, io.Reader) error { return nil }); err == nil {
		t.Errorf("the registry served a range with a forged token")
	} else {
		t.Logf("with a forged token: %v", err)
	}
	reg.Token.Forge(false)
	anon := &chunked.Registry{Host: reg.Host, Repository: "auth/a", Insecure: true}
	if err := anon.Blob(image.Layers[0].Digest).ReadRanges(context.Background(), []chunked.Range{{Off: 0, Len: 16}}, func(chunked.Range, io.Reader) error { return nil }); err == nil {
		t.Errorf("the range client read without credentials")
	} else {
		t.Logf("range client without credentials: %v", err)
	}
	if err := pc.Blob(image.Layers[0].Digest).ReadRanges(context.Background(), []chunked.Range{{Off: 0, Len: 16}}, func(chunked.Range, io.Reader) error { return nil }); err != nil {
		t.Errorf("with a valid token: %v", err)
	}

	c := ocitest.NewContainers(t, ocitest.Options{Registries: []string{reg.Host}})
	dest := filepath.Join(t.TempDir(), "skopeo")
	if out, err := c.SkopeoErr("copy", reg.Ref("auth/a:1"), "oci:"+dest+":a"); err == nil {
		t.Errorf("skopeo copy without credentials succeeded:\n%s", out)
	}
	c.Skopeo(t, "copy", "--src-creds", "moss:s3cret", reg.Ref("auth/a:1"), "oci:"+dest+":a")
	for _, l := range image.Layers {
		hex := strings.TrimPrefix(l.Digest, "sha256:")
		if fi, err := os.Stat(filepath.Join(dest, "blobs", "sha256", hex)); err != nil || fi.Size() != l.Size {
			t.Errorf("skopeo's copy lacks layer %s (%d bytes): %v", l.Digest, l.Size, err)
		}
	}
	if n, _ := reg.Token.Counts(); n <= issued {
		t.Errorf("skopeo got no token from the token server")
	}
}

// pullPartialWithAuth pushes a zstd:chunked image to reg (which wants the
// user moss, password s3cret), pulls it without credentials (refused,
// nothing left) and with them (partially, by range requests the registry
// serves with 206), and returns the image pulled. The credentials are given
// as --creds does, or with authFile in an auth.json.
func pullPartialWithAuth(t *testing.T, reg *ocitest.Registry, authFile bool) *state.ContainerImage {
	dir := t.TempDir()
	anon, policy := registryClient(t, reg, dir)
	authed := *anon
	if authFile {
		authed.AuthFilePath = filepath.Join(dir, "auth-moss.json")
		cred := base64.StdEncoding.EncodeToString([]byte("moss:s3cret"))
		os.WriteFile(authed.AuthFilePath, []byte(fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, reg.Host, cred)), 0o600)
	} else {
		authed.DockerAuthConfig = &types.DockerAuthConfig{Username: "moss", Password: "s3cret"}
	}

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
	t.Logf("pull without credentials: %v", err)
	if all, err := st.Containers(); err != nil || len(all) != 0 {
		t.Fatalf("after the refused pull: records %v %v", all, err)
	}
	// Nothing else either: no object, no index link, no staging.
	var objects int
	st.Store().Walk(func([32]byte, int64) error { objects++; return nil })
	links, _ := filepath.Glob(filepath.Join(st.SHA256Dir(), "objects", "*", "*"))
	staging, _ := filepath.Glob(filepath.Join(st.Root(), state.StagingPrefix+"*"))
	if objects != 0 || len(links) != 0 || len(staging) != 0 {
		t.Fatalf("after the refused pull: %d objects, index links %v, staging %v", objects, links, staging)
	}

	res, err := Pull(context.Background(), st, reg.Ref("auth/a:1"), PullOptions{Sys: &authed, PolicyPath: policy, Fetcher: &PartialLayers{State: st, Sys: &authed}})
	if err != nil {
		t.Fatalf("pull with credentials: %v", err)
	}
	if p := res.Partial; p == nil || p.PartialLayers != 2 || p.WholeLayers != 0 {
		t.Fatalf("partial totals %+v, want both layers read partially", res.Partial)
	}
	reg.Settle(t)
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
	t.Logf("range requests served with 206: %v", ranged)
	return res.Image
}
