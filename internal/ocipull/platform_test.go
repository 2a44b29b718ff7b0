package ocipull

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"github.com/mossfs/mossfs/oci"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/mossfs/mossfs/internal/ocitest"
	"github.com/mossfs/mossfs/internal/state"
)

// TestPullPlatform: a multi-arch index gives this host's platform by
// default and the one --platform names otherwise.
func TestPullPlatform(t *testing.T) {
	dir := t.TempDir()
	policy := filepath.Join(dir, "policy.json")
	os.WriteFile(policy, []byte(`{"default":[{"type":"insecureAcceptAnything"}]}`), 0o600)
	layout := filepath.Join(dir, "layout")
	other := "arm64"
	if runtime.GOARCH == "arm64" {
		other = "amd64"
	}
	img := func(arch string) ocitest.Written {
		return ocitest.WriteLayout(t, layout, arch, ocitest.Image{Arch: arch, Layers: [][]byte{ocitest.Tar(t,
			ocitest.Entry{Name: "arch", Body: arch}, ocitest.Entry{Name: "d/", Type: tar.TypeDir})}})
	}
	host, foreign := img(runtime.GOARCH), img(other)
	// A nested image index naming both, tagged "multi" in index.json.
	type plat struct {
		OS   string `json:"os"`
		Arch string `json:"architecture"`
	}
	type desc struct {
		MediaType   string            `json:"mediaType"`
		Digest      string            `json:"digest"`
		Size        int64             `json:"size"`
		Platform    *plat             `json:"platform,omitempty"`
		Annotations map[string]string `json:"annotations,omitempty"`
	}
	size := func(d string) int64 {
		fi, err := os.Stat(filepath.Join(layout, "blobs", "sha256", d[len("sha256:"):]))
		if err != nil {
			t.Fatal(err)
		}
		return fi.Size()
	}
	const manMT = "application/vnd.oci.image.manifest.v1+json"
	nested, _ := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": []desc{
		{MediaType: manMT, Digest: foreign.ManifestDigest, Size: size(foreign.ManifestDigest), Platform: &plat{"linux", other}},
		{MediaType: manMT, Digest: host.ManifestDigest, Size: size(host.ManifestDigest), Platform: &plat{"linux", runtime.GOARCH}},
	}})
	nd := fmt.Sprintf("sha256:%x", sha256.Sum256(nested))
	os.WriteFile(filepath.Join(layout, "blobs", "sha256", nd[len("sha256:"):]), nested, 0o644)
	var idx struct {
		SchemaVersion int    `json:"schemaVersion"`
		MediaType     string `json:"mediaType"`
		Manifests     []desc `json:"manifests"`
	}
	b, _ := os.ReadFile(filepath.Join(layout, "index.json"))
	json.Unmarshal(b, &idx)
	idx.Manifests = append(idx.Manifests, desc{MediaType: "application/vnd.oci.image.index.v1+json", Digest: nd, Size: int64(len(nested)),
		Annotations: map[string]string{"org.opencontainers.image.ref.name": "multi"}})
	b, _ = json.Marshal(idx)
	os.WriteFile(filepath.Join(layout, "index.json"), b, 0o644)

	st, err := state.Create(filepath.Join(dir, "moss"))
	if err != nil {
		t.Fatal(err)
	}
	res, err := Pull(context.Background(), st, "oci:"+layout+":multi", PullOptions{PolicyPath: policy, Name: "m:host"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Image.ConfigDigest != host.ConfigDigest || res.Image.ManifestDigest != host.ManifestDigest || res.Image.Platform != "linux/"+runtime.GOARCH {
		t.Errorf("default platform: %+v", res.Image)
	}
	sys, err := oci.SystemContext(oci.SysOptions{Platform: "linux/" + other, TLSVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	res, err = Pull(context.Background(), st, "oci:"+layout+":multi", PullOptions{PolicyPath: policy, Sys: sys, Name: "m:other"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Image.ConfigDigest != foreign.ConfigDigest || res.Image.Platform != "linux/"+other {
		t.Errorf("--platform linux/%s: %+v", other, res.Image)
	}
	if _, err := oci.SystemContext(oci.SysOptions{Platform: "linux"}); err == nil {
		t.Errorf("--platform linux accepted")
	}
}
