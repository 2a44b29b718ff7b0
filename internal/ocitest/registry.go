// Package ocitest starts the real programs the OCI tests compare against, each
// isolated in the test's own directories, and cleans up after them. It
// installs nothing (scripts/install-deps.sh does) and never uses the host's
// configuration or the packaged registry configuration (which listens on
// every address).
//
// Registry: Debian's docker-registry on 127.0.0.1 at a free port with its own
// configuration file and storage, its access log enabled (and its debug
// server on another port: Settle reads its goroutine dumps):
//
//	reg := ocitest.StartRegistry(t)      // stopped by t.Cleanup
//	reg.Host                             // "127.0.0.1:PORT"
//	reg.Ref("app:1")                     // "docker://127.0.0.1:PORT/app:1"
//	reg.Name("app:1")                    // "127.0.0.1:PORT/app:1", as podman spells it
//	reg.Accesses(t)                      // parsed access log: method, path, status, bytes
//	reg.BlobBytes(t, "app", "sha256:…")  // bytes served for GETs of one blob (settles first)
//	reg.Settle(t); reg.Served(t)         // totals: requests, blob GETs, blob bytes
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
	debug string // the registry's debug server (goroutine dumps)
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
	// The ports are free when chosen; the registry binds them a moment
	// later (it cannot take a listener from us). Another process taking one
	// in between makes the registry exit, or answer nothing, or leaves the
	// other process answering in its place: startRegistry checks that the
	// listening sockets are the registry's own, and we try other ports.
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

// freeAddrs picks n free loopback addresses, all different (tests replace
// it).
var freeAddrs = func(n int) ([]string, error) {
	var addrs []string
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		defer l.Close()
		addrs = append(addrs, l.Addr().String())
	}
	return addrs, nil
}

func startRegistry(t testing.TB, bin, dir, auth string, attempt int) (*Registry, error) {
	addrs, err := freeAddrs(2)
	if err != nil {
		return nil, err
	}
	addr, debug := addrs[0], addrs[1]
	cfg := filepath.Join(dir, fmt.Sprintf("config-%d.yml", attempt))
	// The debug server serves the Go runtime's goroutine dumps, which
	// Settle reads to see which requests are still being logged.
	conf := fmt.Sprintf(`version: 0.1
log: {level: warn, accesslog: {disabled: false}}
storage: {filesystem: {rootdirectory: %q}, delete: {enabled: true}}
http: {addr: %q, debug: {addr: %q}}
`, filepath.Join(dir, "data"), addr, debug) + auth
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		return nil, err
	}
	r := &Registry{Host: addr, Dir: dir, LogPath: filepath.Join(dir, fmt.Sprintf("access-%d.log", attempt)), debug: debug}
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
	answers := func(url string, ok ...int) bool {
		resp, err := client.Get(url)
		if err != nil {
			return false
		}
		resp.Body.Close()
		for _, code := range ok {
			if resp.StatusCode == code {
				return true
			}
		}
		return false
	}
	// With authentication, /v2/ asks for credentials once ready.
	ready := []int{http.StatusOK}
	if auth != "" {
		ready = append(ready, http.StatusUnauthorized)
	}
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
		if answers("http://"+addr+"/v2/", ready...) &&
			answers("http://"+debug+"/debug/pprof/", http.StatusOK) {
			// Whatever answered may be another process that took a port
			// before the registry could: only its own sockets will do.
			if err := listensOn(cmd.Process.Pid, addr, debug); err != nil {
				stop()
				return nil, err
			}
			t.Cleanup(stop)
			return r, nil
		}
		if time.Now().After(deadline) {
			stop()
			return nil, fmt.Errorf("docker-registry on %s (debug %s) did not answer", addr, debug)
		}
		time.Sleep(30 * time.Millisecond)
	}
}

// listensOn checks that process pid holds the listening TCP sockets of
// addrs (127.0.0.1:PORT): /proc/net/tcp gives each listening socket's
// inode, and the process's descriptors name the inodes of its sockets.
func listensOn(pid int, addrs ...string) error {
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		return err
	}
	inodes := map[string]string{} // "0100007F:PPPP" → inode, listening only
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) >= 10 && f[3] == "0A" {
			inodes[f[1]] = f[9]
		}
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return err
	}
	own := map[string]bool{}
	for _, fd := range fds {
		if l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name())); err == nil {
			own[l] = true
		}
	}
	for _, a := range addrs {
		_, port, err := net.SplitHostPort(a)
		if err != nil {
			return err
		}
		p, err := strconv.Atoi(port)
		if err != nil {
			return fmt.Errorf("%s: %w", a, err)
		}
		ino, ok := inodes[fmt.Sprintf("0100007F:%04X", p)]
		if !ok {
			return fmt.Errorf("nothing listens on %s", a)
		}
		if !own["socket:["+ino+"]"] {
			return fmt.Errorf("another process than docker-registry (pid %d) listens on %s", pid, a)
		}
	}
	return nil
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
// so a caller that just got one calls Settle first.
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

// Settle waits until every request the registry has begun to answer is in
// its access log. The registry writes a request's line after the response
// has gone out, and a client may have read all of it before that (a blob is
// sent with sendfile): waiting for the log to stop growing for a while
// missed lines on a loaded machine. The line is written inside the HTTP
// server's handler, so a goroutine dump of the registry (its debug server)
// in which no goroutine is in the handler of the registry's server means
// that every response a client has received is logged.
func (r *Registry) Settle(t testing.TB) {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second}
	deadline := time.Now().Add(60 * time.Second)
	for {
		busy, err := r.answering(client)
		if err == nil && busy == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("registry: %d requests still being answered after 60 s (%v)", busy, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// answering counts the registry's goroutines in a handler of its server
// (not the debug server's goroutine dump that counts them).
func (r *Registry) answering(client *http.Client) (int, error) {
	resp, err := client.Get("http://" + r.debug + "/debug/pprof/goroutine?debug=2")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("goroutine dump: %s", resp.Status)
	}
	busy := 0
	for _, g := range strings.Split(string(b), "\n\n") {
		if strings.Contains(g, "net/http/pprof.") {
			continue
		}
		// A stack too deep to print whole may hide the handler: count it.
		if strings.Contains(g, "net/http.serverHandler.ServeHTTP") || strings.Contains(g, "additional frames elided") {
			busy++
		}
	}
	return busy, nil
}

// BlobBytes sums the bytes sent for GETs of one blob of a repository.
func (r *Registry) BlobBytes(t testing.TB, repo, digest string) (bytes int64, requests int) {
	t.Helper()
	r.Settle(t)
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
