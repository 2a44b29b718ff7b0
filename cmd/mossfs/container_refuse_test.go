package main

import (
	"archive/tar"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/mossfs/mossfs/internal/ocitest"
	"github.com/mossfs/mossfs/internal/state"
)

// TestContainerImageIsNotATransaction pulls a container image (with the
// built moss-oci, from an OCI layout) into a state root that holds
// transactions 1–3, then checks that the commands that take OS
// transactions refuse it with an error saying it is a container image:
// switch by each way of naming it (name, config digest, short ID, manifest
// digest, EROFS image digest), rollback when the active record names it,
// and bls, which writes entries for the transactions only.
func TestContainerImageIsNotATransaction(t *testing.T) {
	b := newBootState(t)
	dir := t.TempDir()
	bin := filepath.Join(dir, "moss-oci")
	if out, err := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-o", bin, "../moss-oci").CombinedOutput(); err != nil {
		t.Fatalf("go build moss-oci: %v\n%s", err, out)
	}
	policy := filepath.Join(dir, "policy.json")
	os.WriteFile(policy, []byte(`{"default":[{"type":"insecureAcceptAnything"}]}`), 0o600)
	layout := filepath.Join(dir, "layout")
	ocitest.WriteLayout(t, layout, "app", ocitest.Image{Gzip: true, Layers: [][]byte{ocitest.Tar(t,
		ocitest.Entry{Name: "etc/", Type: tar.TypeDir},
		ocitest.Entry{Name: "etc/os-release", Body: strings.Repeat("a container, not an OS ", 40)},
	)}})
	if out, err := exec.Command(bin, "image", "pull", "--root", b.root, "--signature-policy", policy, "--name", "app:1", "-q", "oci:"+layout+":app").CombinedOutput(); err != nil {
		t.Fatalf("moss-oci image pull: %v\n%s", err, out)
	}
	st, err := state.Open(b.root)
	if err != nil {
		t.Fatal(err)
	}
	c, err := st.FindContainer("app:1")
	if err != nil {
		t.Fatal(err)
	}
	activeBefore, _ := os.ReadFile(filepath.Join(b.root, "active"))

	run := func(cmd string, args ...string) (string, error) {
		for _, c := range rootCmd.Commands() {
			c.Flags().VisitAll(resetFlag)
		}
		var out bytes.Buffer
		rootCmd.SetOut(&out)
		defer rootCmd.SetOut(nil)
		rootCmd.SetArgs(append([]string{cmd, "--root", b.root}, args...))
		err := rootCmd.Execute()
		return out.String(), err
	}

	for _, arg := range []string{"app:1", c.ConfigDigest, c.ID()[:12], c.ManifestDigest, "sha256:" + c.Image, c.Image} {
		_, err := run("switch", "--target", filepath.Join(dir, "usr"), "--skip-triggers", arg)
		if err == nil || !strings.Contains(err.Error(), "is a container image") || !strings.Contains(err.Error(), c.ConfigDigest) {
			t.Errorf("switch %s: %v, want a refusal naming the container image", arg, err)
		}
	}
	if _, err := run("switch", "--target", filepath.Join(dir, "usr"), "sha256:"+strings.Repeat("0", 64)); err == nil || !strings.Contains(err.Error(), "is not a transaction id") {
		t.Errorf("switch of an unknown digest: %v", err)
	}
	if after, _ := os.ReadFile(filepath.Join(b.root, "active")); !bytes.Equal(after, activeBefore) {
		t.Errorf("the refused switches changed the active record: %q, was %q", after, activeBefore)
	}
	if _, err := os.Stat(filepath.Join(dir, "usr")); err == nil {
		t.Errorf("a refused switch created its target")
	}

	// bls writes entries for transactions 1–3 only; the image is in none.
	entries := filepath.Join(dir, "loader", "entries")
	if _, err := run("bls", entries, "--linux", "/vmlinuz", "--options", "root=/dev/vda", "--keep", "10"); err != nil {
		t.Fatalf("bls: %v", err)
	}
	ents, _ := os.ReadDir(entries)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
		data, _ := os.ReadFile(filepath.Join(entries, e.Name()))
		if strings.Contains(string(data), c.Image) || strings.Contains(string(data), c.ID()) {
			t.Errorf("boot entry %s names the container image:\n%s", e.Name(), data)
		}
	}
	if strings.Join(names, " ") != "mossfs-1.conf mossfs-2.conf mossfs-3.conf" {
		t.Errorf("bls entries %v, want the three transactions'", names)
	}

	// An active record naming the container image (written by hand or by
	// an older tool) is refused by rollback (and everything reading it through
	// State.Active), saying why.
	for _, rec := range []string{c.ConfigDigest, c.ID()} {
		if err := os.WriteFile(filepath.Join(b.root, "active"), []byte(rec+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := run("rollback", "--target", filepath.Join(dir, "usr"), "--skip-triggers"); err == nil ||
			!strings.Contains(err.Error(), "names container image "+c.ConfigDigest) || !strings.Contains(err.Error(), "not an OS transaction") {
			t.Errorf("rollback with active %s: %v, want a refusal naming the container image", rec, err)
		}
		if _, err := st.Active(); err == nil || !strings.Contains(err.Error(), "names container image") {
			t.Errorf("Active with the record %s: %v", rec, err)
		}
	}
	// The refusal is specific: another bad record gets the plain error.
	os.WriteFile(filepath.Join(b.root, "active"), []byte("garbage\n"), 0o644)
	if _, err := st.Active(); err == nil || strings.Contains(err.Error(), "container") || !strings.Contains(err.Error(), "not a decimal number") {
		t.Errorf("Active with a garbage record: %v", err)
	}
	// SetActive takes transactions only; the record becomes one again.
	if err := st.SetActive(2); err != nil {
		t.Fatal(err)
	}
	if id, err := st.Active(); err != nil || id != 2 {
		t.Errorf("Active after SetActive(2): %d %v", id, err)
	}
}
