// Package ocitest starts the real programs the OCI tests compare against, each
// isolated in the test's own directories, and cleans up after them. It
// installs nothing (scripts/install-deps.sh does) and never uses the host's
// configuration or the packaged registry configuration (which listens on
// every address).
//
// Registry: Debian's docker-registry on 127.0.0.1 at a free port with its own
// configuration file and storage, its access log enabled:
//
//	reg := ocitest.StartRegistry(t)      // stopped by t.Cleanup
//	reg.Host                             // "127.0.0.1:PORT"
//	reg.Ref("app:1")                     // "docker://127.0.0.1:PORT/app:1"
//	reg.Name("app:1")                    // "127.0.0.1:PORT/app:1", as podman spells it
//	reg.Accesses(t)                      // parsed access log: method, path, status, bytes
//	reg.BlobBytes(t, "app", "sha256:…")  // bytes served for GETs of one blob (settles first)
//	reg.Settle(); reg.Served(t)          // totals: requests, blob GETs, blob bytes
//
// With RegistryOptions.Users, StartRegistryWith turns on the registry's
// htpasswd authentication (bcrypt entries written by the test): every
// request then needs basic credentials, and /v2/ answers 401 without them.
// With Token too, the registry uses the bearer-token flow instead: its realm
// is a TokenServer the test runs (reg.Token), which issues signed JWTs to
// those users, and the registry checks them against the server's
// certificate.
//
//	reg := ocitest.StartRegistryWith(t, ocitest.RegistryOptions{Users: map[string]string{"u": "p"}})
//	reg := ocitest.StartRegistryWith(t, ocitest.RegistryOptions{Users: users, Token: true})
//
// Containers: the configuration podman and skopeo read (containers.conf,
// storage.conf, registries.conf, policy.json, as in
// shared/reference/oci.md), written into the test's directory and passed by
// environment variables, and a private store (--root/--runroot):
//
//	c := ocitest.NewContainers(t, ocitest.Options{Registries: []string{reg.Host}})
//	c.Skopeo(t, "copy", "--dest-compress-format", "zstd", "oci:"+dir+":app", reg.Ref("app:1"))
//	c.Podman(t, "pull", reg.Name("app:1"))            // fails the test on error
//	out, err := c.PodmanErr("image", "mount", reg.Name("app:1"))
//	c.Env, c.PodmanArgs(), c.GraphRoot, c.RunRoot, c.PolicyPath, c.RegistriesConf,
//	c.StorageConf, c.ContainersConf, c.AuthFile, c.TmpDir
//
// Podman and Skopeo add the isolating options themselves (--root, --runroot,
// --storage-driver, --tmpdir; --policy, --registries-conf: skopeo 1.9
// ignores CONTAINERS_REGISTRIES_CONF). Options.ExtraStorageConf and
// ExtraOverlayConf add TOML to storage.conf (pull_options, use_composefs).
// Tests that use podman must run in the private mount namespace
// (testenv.MainInMountNS + RequireMountNS): podman mounts overlays.
//
// Cleanup (t.Cleanup) unmounts whatever podman left mounted below the test's
// directory and removes the empty libpod_parent cgroups podman created. In
// the private mount namespace of internal/testenv (MainInMountNS), a tmpfs
// is mounted over /var/lib/containers/cache first, so that the blob-info
// cache that neither podman nor skopeo lets a configuration move is
// per-process and empty: a push cannot reuse a blob from another run or
// ignore a compression flag because of it.
//
// Images: Tar builds a layer from Entry values (whiteouts, hardlinks,
// xattrs, devices are just entries), and WriteLayout writes an OCI image
// layout (uncompressed or gzip layers, a config with diff_ids) that skopeo
// or containers/image copy to the registry in the compression wanted.
package ocitest

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// Registry is a running docker-registry.
type Registry struct {
	Host    string // 127.0.0.1:PORT
	Dir     string // its configuration, storage and log
	LogPath string // the access log (the registry's stdout)
	// Token is the token server (RegistryOptions.Token), else nil.
	Token *TokenServer
}

// RegistryOptions changes how StartRegistryWith configures the registry.
// The zero value is StartRegistry's: no authentication.
type RegistryOptions struct {
	// Users, when not empty, turns on htpasswd authentication with these
	// user names and passwords.
	Users map[string]string
	// Token puts the Users behind the bearer-token flow instead of
	// htpasswd: the registry's "auth: token:" with a TokenServer the test
	// runs (Registry.Token) as its realm.
	Token bool
}

// StartRegistry starts docker-registry on a free loopback port; t.Cleanup
// stops it. The test is skipped if docker-registry is not installed, unless
// CI=true, where that is a failure.
func StartRegistry(t testing.TB) *Registry {
	t.Helper()
	return StartRegistryWith(t, RegistryOptions{})
}

// StartRegistryWith is StartRegistry with options.
func StartRegistryWith(t testing.TB, o RegistryOptions) *Registry {
	t.Helper()
	bin := requireTool(t, "docker-registry")
	dir := t.TempDir()
	var auth string
	var ts *TokenServer
	if o.Token {
		if len(o.Users) == 0 {
			t.Fatal("ocitest: RegistryOptions.Token needs Users")
		}
		ts = StartTokenServer(t, dir, o.Users)
		auth = ts.registryConfig()
	} else if len(o.Users) > 0 {
		path := filepath.Join(dir, "htpasswd")
		var b strings.Builder
		for u, p := range o.Users {
			h, err := bcrypt.GenerateFromPassword([]byte(p), bcrypt.MinCost)
			if err != nil {
				t.Fatalf("htpasswd entry for %s: %v", u, err)
			}
			fmt.Fprintf(&b, "%s:%s\n", u, h)
		}
		if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
			t.Fatal(err)
		}
		auth = fmt.Sprintf("auth: {htpasswd: {realm: mossfs-test, path: %q}}\n", path)
	}
	// The port is free when chosen; the registry binds it a moment later.
	// Another process taking it in between makes the start fail below, and
	// we try another port.
	for attempt := 0; ; attempt++ {
		r, err := startRegistry(t, bin, dir, auth, attempt)
		if err == nil {
			r.Token = ts
			return r
		}
		if attempt >= 3 {
			t.Fatalf("starting docker-registry: %v", err)
		}
	}
}

func startRegistry(t testing.TB, bin, dir, auth string, attempt int) (*Registry, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := l.Addr().String()
	l.Close()
	cfg := filepath.Join(dir, fmt.Sprintf("config-%d.yml", attempt))
	conf := fmt.Sprintf(`version: 0.1
log: {level: warn, accesslog: {disabled: false}}
storage: {filesystem: {rootdirectory: %q}, delete: {enabled: true}}
http: {addr: %q}
`, filepath.Join(dir, "data"), addr) + auth
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		return nil, err
	}
	r := &Registry{Host: addr, Dir: dir, LogPath: filepath.Join(dir, fmt.Sprintf("access-%d.log", attempt))}
	out, err := os.Create(r.LogPath)
	if err != nil {
		return nil, err
	}
	errLog, err := os.Create(filepath.Join(dir, fmt.Sprintf("error-%d.log", attempt)))
	if err != nil {
		out.Close()
		return nil, err
	}
	cmd := exec.Command(bin, "serve", cfg)
	cmd.Stdout, cmd.Stderr = out, errLog
	if err := cmd.Start(); err != nil {
		out.Close()
		errLog.Close()
		return nil, err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop := func() {
		cmd.Process.Kill()
		<-exited
		out.Close()
		errLog.Close()
	}
	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(20 * time.Second)
	for {
		select {
		case err := <-exited:
			exited <- err
			stop()
			msg, _ := os.ReadFile(errLog.Name())
			return nil, fmt.Errorf("docker-registry exited (%v): %s", err, msg)
		default:
		}
		resp, err := client.Get("http://" + addr + "/v2/")
		if err == nil {
			resp.Body.Close()
			// With authentication, /v2/ asks for credentials once ready.
			if resp.StatusCode == http.StatusOK || (auth != "" && resp.StatusCode == http.StatusUnauthorized) {
				t.Cleanup(stop)
				return r, nil
			}
		}
		if time.Now().After(deadline) {
			stop()
			return nil, fmt.Errorf("docker-registry on %s did not answer: %v", addr, err)
		}
		time.Sleep(30 * time.Millisecond)
	}
}

// Ref is the docker:// reference of repository:tag (or repository@digest)
// in this registry.
func (r *Registry) Ref(nameTag string) string { return "docker://" + r.Host + "/" + nameTag }

// Name is the reference without the transport, as podman spells it.
func (r *Registry) Name(nameTag string) string { return r.Host + "/" + nameTag }

// Access is one line of the access log.
type Access struct {
	Method string
	Path   string // the request path, query removed
	Status int
	Bytes  int64 // response body bytes the registry sent
}

// Accesses parses the access log. Lines are written after each response,
// so a caller that just got one may need WaitAccesses.
func (r *Registry) Accesses(t testing.TB) []Access {
	t.Helper()
	f, err := os.Open(r.LogPath)
	if err != nil {
		t.Fatalf("registry access log: %v", err)
	}
	defer f.Close()
	as, err := ParseAccessLog(f)
	if err != nil {
		t.Fatalf("registry access log %s: %v", r.LogPath, err)
	}
	return as
}

// ParseAccessLog reads docker-registry's combined-format access log:
//
//	127.0.0.1 - - [07/Dec/2026:02:00:00 +0000] "GET /v2/x/blobs/sha256:… HTTP/1.1" 206 1234 "" "agent"
//
// Lines that are not access lines are skipped.
func ParseAccessLog(rd io.Reader) ([]Access, error) {
	var out []Access
	sc := bufio.NewScanner(rd)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		_, req, ok := strings.Cut(sc.Text(), `"`)
		if !ok {
			continue
		}
		reqLine, rest, ok := strings.Cut(req, `" `)
		if !ok {
			continue
		}
		f := strings.Fields(reqLine)
		g := strings.Fields(rest)
		if len(f) < 2 || len(g) < 2 {
			continue
		}
		status, err1 := strconv.Atoi(g[0])
		n, err2 := strconv.ParseInt(g[1], 10, 64)
		if err1 != nil {
			continue
		}
		if err2 != nil { // "-" for no body
			n = 0
		}
		path, _, _ := strings.Cut(f[1], "?")
		out = append(out, Access{Method: f[0], Path: path, Status: status, Bytes: n})
	}
	return out, sc.Err()
}

// WaitAccesses waits (up to 5 s) until the access log has at least n lines
// and returns them.
func (r *Registry) WaitAccesses(t testing.TB, n int) []Access {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		as := r.Accesses(t)
		if len(as) >= n || time.Now().After(deadline) {
			return as
		}
		time.Sleep(30 * time.Millisecond)
	}
}

// Traffic sums what the registry served.
type Traffic struct {
	Requests  int   // all requests
	BlobGETs  int   // GET requests of blobs
	BlobBytes int64 // bytes sent for blob GETs
	Bytes     int64 // bytes sent for every request
}

// Served sums the whole access log so far. Call Settle first when the last
// response was just received.
func (r *Registry) Served(t testing.TB) Traffic {
	t.Helper()
	var tr Traffic
	for _, a := range r.Accesses(t) {
		tr.Requests++
		tr.Bytes += a.Bytes
		if a.Method == http.MethodGet && strings.Contains(a.Path, "/blobs/") {
			tr.BlobGETs++
			tr.BlobBytes += a.Bytes
		}
	}
	return tr
}

// Settle waits until the access log stops growing (the registry writes a
// line after each response), at most 2 s.
func (r *Registry) Settle() {
	var last int64 = -1
	for i := 0; i < 40; i++ {
		fi, err := os.Stat(r.LogPath)
		if err != nil {
			return
		}
		if fi.Size() == last {
			return
		}
		last = fi.Size()
		time.Sleep(50 * time.Millisecond)
	}
}

// BlobBytes sums the bytes sent for GETs of one blob of a repository.
func (r *Registry) BlobBytes(t testing.TB, repo, digest string) (bytes int64, requests int) {
	t.Helper()
	r.Settle()
	p := "/v2/" + repo + "/blobs/" + digest
	for _, a := range r.Accesses(t) {
		if a.Method == http.MethodGet && a.Path == p {
			bytes += a.Bytes
			requests++
		}
	}
	return bytes, requests
}

// requireTool finds a program or skips (fails under CI=true) without it.
func requireTool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is not installed (scripts/install-deps.sh installs it)", name)
		}
		t.Skipf("%s is not installed (scripts/install-deps.sh installs it)", name)
	}
	return p
}
