package oci

import (
	"encoding/json"
	"testing"

	"github.com/opencontainers/go-digest"
)

// FuzzRebaseConfig: a stored container config (from a registry: untrusted)
// rebased onto new diff_ids never panics, and what it returns is JSON with
// those diff_ids and the composefs label.
func FuzzRebaseConfig(f *testing.F) {
	f.Add([]byte(`{"architecture":"amd64","os":"linux","config":{"Env":["A=1"],"Labels":{"x":"y"}},"rootfs":{"type":"layers","diff_ids":["sha256:00"]},"history":[{}]}`))
	f.Add([]byte(`{"config":null,"rootfs":null}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`[]`))
	ids := []digest.Digest{digest.FromString("a"), digest.FromString("b")}
	f.Fuzz(func(t *testing.T, orig []byte) {
		out, err := rebaseConfig(orig, ids, "cafe")
		if err != nil {
			return
		}
		var cfg struct {
			Config struct{ Labels map[string]string }
			RootFS struct {
				DiffIDs []digest.Digest `json:"diff_ids"`
			} `json:"rootfs"`
		}
		if err := json.Unmarshal(out, &cfg); err != nil {
			t.Fatalf("rebased config is not JSON: %v\n%s", err, out)
		}
		if len(cfg.RootFS.DiffIDs) != 2 || cfg.RootFS.DiffIDs[1] != ids[1] || cfg.Config.Labels[LabelComposefs] != "cafe" {
			t.Fatalf("rebased config: %s", out)
		}
	})
}
