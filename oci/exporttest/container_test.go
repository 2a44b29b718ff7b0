package exporttest

import (
	"context"
	"encoding/json"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/mossfs/mossfs/oci"
)

// configOf reads the config of an OCI layout's only image.
func configOf(t *testing.T, dir string) (map[string]any, int) {
	t.Helper()
	_, m := ociLayoutManifest(t, dir)
	var cfg map[string]any
	readJSON(t, filepath.Join(dir, "blobs", "sha256", strings.TrimPrefix(m["config"].(map[string]any)["digest"].(string), "sha256:")), &cfg)
	return cfg, len(m["layers"].([]any))
}

// TestExportContainer: a pulled two-layer image (a whiteout in the second)
// exports as itself: the same number of layers, the original config but
// for the diff_ids and the composefs label, and pulled back it composes to
// the image the first pull recorded.
func TestExportContainer(t *testing.T) {
	bin := binaries(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	if _, err := oci.Export(context.Background(), oci.ExportRequest{
		Layers:      composefsLayers(true),
		Config:      oci.ExportConfig{Entrypoint: []string{"/bin/true"}, Env: []string{"A=1"}, Labels: map[string]string{"x": "y"}, CreatedBy: "container test"},
		Compression: oci.CompressionGzip,
		Dest:        "oci:" + src + ":v1",
		TempDir:     dir,
	}); err != nil {
		t.Fatal(err)
	}
	first, root := pullBack(t, nil, bin, "oci:"+src+":v1", "--name", "test/img:v1")
	out := run(t, nil, filepath.Join(bin, "moss-oci"), "export", "--root", root, "--json", "test/img:v1", "oci:"+filepath.Join(dir, "out2"))
	var res exportResult
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatal(err)
	}
	if res.Composefs != first {
		t.Errorf("export label %s, the pull recorded image %s", res.Composefs, first)
	}
	orig, n1 := configOf(t, src)
	again, n2 := configOf(t, filepath.Join(dir, "out2"))
	if n1 != 2 || n2 != 2 {
		t.Errorf("layers: %d exported as %d, want 2 and 2", n1, n2)
	}
	if got := again["rootfs"].(map[string]any)["diff_ids"]; !reflect.DeepEqual(got, toAny(res.DiffIDs)) {
		t.Errorf("config diff_ids %v, export %v", got, res.DiffIDs)
	}
	for _, c := range []map[string]any{orig, again} {
		delete(c["rootfs"].(map[string]any), "diff_ids")
		delete(c["config"].(map[string]any)["Labels"].(map[string]any), oci.LabelComposefs)
	}
	if !reflect.DeepEqual(orig, again) {
		a, _ := json.Marshal(orig)
		b, _ := json.Marshal(again)
		t.Errorf("config not kept:\n%s\n%s", a, b)
	}
	if got, _ := pullBack(t, nil, bin, "oci:"+filepath.Join(dir, "out2")); got != first {
		t.Errorf("pulled back: image %s, first pull %s", got, first)
	}
}

func toAny(s []string) []any {
	out := make([]any, len(s))
	for i, v := range s {
		out[i] = v
	}
	return out
}
