package main

import (
	"archive/tar"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/mossfs/mossfs/internal/ocitest"
	"github.com/mossfs/mossfs/internal/state"
)

// TestPullCredentials runs the built moss-oci against Debian's
// docker-registry with htpasswd authentication, the image pushed there by
// skopeo --dest-creds: image pull without credentials, or with wrong ones,
// fails with an error saying authentication failed and records nothing;
// --creds USER:PASSWORD and --authfile (a podman-style auth.json,
// base64 "user:password") both pull the image.
func TestPullCredentials(t *testing.T) {
	skopeo, err := exec.LookPath("skopeo")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("skopeo is not installed (scripts/install-deps.sh installs it)")
		}
		t.Skip("skopeo is not installed")
	}
	reg := ocitest.StartRegistryWith(t, ocitest.RegistryOptions{Users: map[string]string{"moss": "s3cret"}})
	dir := t.TempDir()
	bin := filepath.Join(dir, "moss-oci")
	if out, err := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	policy := filepath.Join(dir, "policy.json")
	os.WriteFile(policy, []byte(`{"default":[{"type":"insecureAcceptAnything"}]}`), 0o600)
	conf := filepath.Join(dir, "registries.conf")
	os.WriteFile(conf, []byte(fmt.Sprintf("unqualified-search-registries = []\n[[registry]]\nlocation = %q\ninsecure = true\n", reg.Host)), 0o600)
	emptyAuth := filepath.Join(dir, "empty-auth.json")
	os.WriteFile(emptyAuth, []byte(`{}`), 0o600)
	// Neither program may find the host's credentials or configuration.
	env := append(os.Environ(), "HOME="+dir, "XDG_RUNTIME_DIR="+dir, "XDG_CONFIG_HOME="+dir,
		"REGISTRY_AUTH_FILE="+emptyAuth, "CONTAINERS_REGISTRIES_CONF="+conf)

	layout := filepath.Join(dir, "layout")
	w := ocitest.WriteLayout(t, layout, "app", ocitest.Image{Gzip: true, Layers: [][]byte{ocitest.Tar(t,
		ocitest.Entry{Name: "etc/", Type: tar.TypeDir},
		ocitest.Entry{Name: "etc/secret-image", Body: strings.Repeat("only with credentials ", 50)},
	)}})
	push := exec.Command(skopeo, "--policy", policy, "--registries-conf", conf, "copy", "--quiet",
		"--dest-tls-verify=false", "--dest-creds", "moss:s3cret", "oci:"+layout+":app", reg.Ref("private/app:1"))
	push.Env = env
	if out, err := push.CombinedOutput(); err != nil {
		t.Fatalf("skopeo copy --dest-creds: %v\n%s", err, out)
	}

	root := filepath.Join(dir, "moss")
	pull := func(extra ...string) (string, string, error) {
		args := append([]string{"image", "pull", "--root", root, "--signature-policy", policy, "--tls-verify=false", "--json"}, extra...)
		args = append(args, reg.Ref("private/app:1"))
		cmd := exec.Command(bin, args...)
		cmd.Env = env
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		return string(out), stderr.String(), err
	}
	records := func() int {
		st, err := state.Open(root)
		if err != nil {
			t.Fatal(err)
		}
		all, err := st.Containers()
		if err != nil {
			t.Fatal(err)
		}
		return len(all)
	}
	for _, c := range []struct {
		name  string
		extra []string
	}{{"no credentials", nil}, {"wrong password", []string{"--creds", "moss:wrong"}}} {
		out, stderr, err := pull(c.extra...)
		if err == nil {
			t.Fatalf("pull with %s succeeded: %s", c.name, out)
		}
		if !strings.Contains(stderr, "private/app:1") ||
			!(strings.Contains(stderr, "authentication required") || strings.Contains(stderr, "unauthorized")) {
			t.Errorf("pull with %s: error %q does not name the image and the authentication failure", c.name, stderr)
		}
		t.Logf("pull with %s: %s", c.name, strings.TrimSpace(stderr))
		if strings.TrimSpace(out) != "" {
			t.Errorf("pull with %s printed %q on stdout", c.name, out)
		}
		if n := records(); n != 0 {
			t.Fatalf("pull with %s left %d image records", c.name, n)
		}
	}

	var res struct {
		Image struct {
			ConfigDigest string `json:"config_digest"`
		} `json:"image"`
		AlreadyPresent bool `json:"already_present"`
	}
	out, stderr, err := pull("--creds", "moss:s3cret")
	if err != nil {
		t.Fatalf("pull --creds: %v\n%s", err, stderr)
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil || res.Image.ConfigDigest != w.ConfigDigest || res.AlreadyPresent {
		t.Fatalf("pull --creds: %+v %v\n%s", res, err, out)
	}

	// --authfile, into a fresh store so that the pull really fetches.
	authfile := filepath.Join(dir, "auth.json")
	aj, _ := json.Marshal(map[string]any{"auths": map[string]any{
		reg.Host: map[string]string{"auth": base64.StdEncoding.EncodeToString([]byte("moss:s3cret"))},
	}})
	os.WriteFile(authfile, aj, 0o600)
	root = filepath.Join(dir, "moss2")
	out, stderr, err = pull("--authfile", authfile)
	if err != nil {
		t.Fatalf("pull --authfile: %v\n%s", err, stderr)
	}
	res.Image.ConfigDigest = ""
	if err := json.Unmarshal([]byte(out), &res); err != nil || res.Image.ConfigDigest != w.ConfigDigest || res.AlreadyPresent {
		t.Fatalf("pull --authfile: %+v %v\n%s", res, err, out)
	}
	if n := records(); n != 1 {
		t.Errorf("after pull --authfile: %d records, want 1", n)
	}
	st, err := state.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	c, err := st.FindContainer(w.ConfigDigest)
	if err != nil || c.Counts.Files != 1 {
		t.Errorf("record of the image pulled with --authfile: %+v %v", c, err)
	}
}
