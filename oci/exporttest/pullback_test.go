package exporttest

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mossfs/mossfs/oci"
)

// pullBack pulls ref with moss-oci into a new state root and returns the
// composefs image digest of the record and the root.
func pullBack(t *testing.T, env []string, bin, ref string, extra ...string) (string, string) {
	t.Helper()
	root := filepath.Join(t.TempDir(), "pulled")
	args := append([]string{"image", "pull", "--root", root, "--json", "--signature-policy", policyFile(t), ref}, extra...)
	out := run(t, env, filepath.Join(bin, "moss-oci"), args...)
	var res struct {
		Image struct {
			Image string `json:"image"`
		} `json:"image"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil || res.Image.Image == "" {
		t.Fatalf("image pull --json: %v\n%s", err, out)
	}
	return res.Image.Image, root
}

func policyFile(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "policy.json")
	if err := os.WriteFile(p, []byte(`{"default":[{"type":"insecureAcceptAnything"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// relabel rewrites an OCI layout's only image with another composefs
// label (new config, manifest and index), as a tampered copy would be.
func relabel(t *testing.T, dir, label string) {
	t.Helper()
	blob := func(d string) string { return filepath.Join(dir, "blobs", "sha256", strings.TrimPrefix(d, "sha256:")) }
	put := func(data []byte) (string, int) {
		sum := sha256.Sum256(data)
		d := "sha256:" + hex.EncodeToString(sum[:])
		if err := os.WriteFile(blob(d), data, 0o644); err != nil {
			t.Fatal(err)
		}
		return d, len(data)
	}
	var index map[string]any
	readJSON(t, filepath.Join(dir, "index.json"), &index)
	mdesc := index["manifests"].([]any)[0].(map[string]any)
	var man map[string]any
	readJSON(t, blob(mdesc["digest"].(string)), &man)
	cdesc := man["config"].(map[string]any)
	var cfg map[string]any
	readJSON(t, blob(cdesc["digest"].(string)), &cfg)
	cfg["config"].(map[string]any)["Labels"].(map[string]any)[oci.LabelComposefs] = label
	data, _ := json.Marshal(cfg)
	cdesc["digest"], cdesc["size"] = put(data)
	data, _ = json.Marshal(man)
	mdesc["digest"], mdesc["size"] = put(data)
	data, _ = json.Marshal(index)
	if err := os.WriteFile(filepath.Join(dir, "index.json"), data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func readJSON(t *testing.T, p string, v any) {
	t.Helper()
	data, err := os.ReadFile(p)
	if err == nil {
		err = json.Unmarshal(data, v)
	}
	if err != nil {
		t.Fatalf("%s: %v", p, err)
	}
}

func countFiles(t *testing.T, dir string) int {
	t.Helper()
	n := 0
	filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			n++
		}
		return nil
	})
	return n
}

// TestExportPullBack: an export pulled back by moss-oci image pull (from
// oci:, oci-archive: and docker-archive:) composes to the image its label
// names; a tampered label is refused with both digests, nothing stays,
// and --no-verify-seal takes it.
func TestExportPullBack(t *testing.T) {
	bin := binaries(t)
	src := makeSourceTree(t)
	root := composeTx(t, bin, src)
	out := t.TempDir()
	r := export(t, bin, root, "oci:"+filepath.Join(out, "lay")+":latest")
	for _, ref := range []string{"oci:" + filepath.Join(out, "lay") + ":latest", "oci-archive:" + filepath.Join(out, "a.tar"), "docker-archive:" + filepath.Join(out, "d.tar")} {
		if !strings.HasPrefix(ref, "oci:") {
			export(t, bin, root, ref)
		}
		if got, _ := pullBack(t, nil, bin, ref); got != r.Composefs {
			t.Errorf("%s pulled back: composefs image %s, exported label %s", ref, got, r.Composefs)
		}
	}

	// A label that names another image.
	bad := strings.Repeat("ab", 32)
	relabel(t, filepath.Join(out, "lay"), bad)
	proot := filepath.Join(t.TempDir(), "p")
	cmd := exec.Command(filepath.Join(bin, "moss-oci"), "image", "pull", "--root", proot, "--signature-policy", policyFile(t), "oci:"+filepath.Join(out, "lay"))
	msg, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(msg), bad) || !strings.Contains(string(msg), r.Composefs) {
		t.Errorf("tampered label: err %v, want both digests in the error:\n%s", err, msg)
	}
	if n := countFiles(t, filepath.Join(proot, "cas", "objects")); n != 0 {
		t.Errorf("a refused pull left %d objects", n)
	}
	if n := countFiles(t, filepath.Join(proot, "containers")); n != 0 {
		t.Errorf("a refused pull left %d container files", n)
	}
	if got, _ := pullBack(t, nil, bin, "oci:"+filepath.Join(out, "lay"), "--no-verify-seal"); got != r.Composefs {
		t.Errorf("--no-verify-seal: composefs image %s, want %s", got, r.Composefs)
	}
}
