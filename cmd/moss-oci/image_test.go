package main

import (
	"archive/tar"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/mossfs/mossfs/internal/ocitest"
	"github.com/mossfs/mossfs/internal/state"
)

// TestImageCommands runs the built moss-oci: pull (--json, and again: "already
// in the store"), list --json, inspect, remove --json; then gc frees the
// image, its objects and their index links, and switch refuses the image.
func TestImageCommands(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "moss-oci")
	if out, err := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	policy := filepath.Join(dir, "policy.json")
	os.WriteFile(policy, []byte(`{"default":[{"type":"insecureAcceptAnything"}]}`), 0o600)
	layout := filepath.Join(dir, "layout")
	w := ocitest.WriteLayout(t, layout, "app", ocitest.Image{Gzip: true, Layers: [][]byte{ocitest.Tar(t,
		ocitest.Entry{Name: "etc/", Type: tar.TypeDir},
		ocitest.Entry{Name: "etc/big", Body: strings.Repeat("big file ", 100)},
	)}})
	root := filepath.Join(dir, "moss")
	run := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(bin, args...)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("moss-oci %v: %v\n%s", args, err, stderr.String())
		}
		return string(out)
	}
	ref := "oci:" + layout + ":app"
	var res struct {
		Image struct {
			ConfigDigest string   `json:"config_digest"`
			Names        []string `json:"names"`
		} `json:"image"`
		AlreadyPresent bool `json:"already_present"`
		Files          int  `json:"files"`
	}
	out := run("image", "pull", "--root", root, "--signature-policy", policy, "--name", "app:1", "--json", ref)
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("pull --json: %v\n%s", err, out)
	}
	if res.Image.ConfigDigest != w.ConfigDigest || res.AlreadyPresent || res.Files != 1 || res.Image.Names[0] != "app:1" {
		t.Errorf("pull --json: %+v", res)
	}
	if out := run("image", "pull", "--root", root, "--signature-policy", policy, "--name", "app:1", ref); !strings.Contains(out, "already in the store") {
		t.Errorf("second pull said %q", out)
	}
	var list []state.ContainerImage
	if err := json.Unmarshal([]byte(run("image", "list", "--root", root, "--json")), &list); err != nil || len(list) != 1 || list[0].Names[0] != "app:1" {
		t.Errorf("list --json: %+v %v", list, err)
	}
	if out := run("image", "inspect", "--root", root, "app:1"); !strings.Contains(out, w.ConfigDigest) || !strings.Contains(out, `"diff_id"`) {
		t.Errorf("inspect: %s", out)
	}
	st, err := state.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.NotATransaction("switch", "app:1"); err == nil || !strings.Contains(err.Error(), "is a container image") {
		t.Errorf("switch app:1: %v", err)
	}
	// gc keeps the image while its record exists.
	if g, err := st.GC(state.GCOptions{}); err != nil || g.ObjectsRemoved != 0 || len(g.Images) != 1 {
		t.Fatalf("gc with the record: %+v %v", g, err)
	}
	if out := run("image", "remove", "--root", root, "--json", "app:1"); !strings.Contains(out, w.ConfigDigest) {
		t.Errorf("remove --json: %s", out)
	}
	if out := run("image", "list", "--root", root, "--json"); strings.TrimSpace(out) != "[]" {
		t.Errorf("list after remove: %s", out)
	}
	g, err := st.GC(state.GCOptions{})
	if err != nil || g.ObjectsRemoved != 1 || g.IndexLinksRemoved != 1 || len(g.ImagesRemoved) != 1 {
		t.Errorf("gc after remove: %+v %v", g, err)
	}
}
