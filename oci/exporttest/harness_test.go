package exporttest

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// binaries builds moss-compose, moss-oci and mossfs once per test binary (static, as
// make build does) and returns their directory.
func binaries(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "exporttest-bin-")
		if buildErr != nil {
			return
		}
		cmd := exec.Command("go", "build", "-o", binDir+"/", "github.com/mossfs/mossfs/cmd/moss-compose", "github.com/mossfs/mossfs/cmd/moss-oci", "github.com/mossfs/mossfs/cmd/mossfs")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %w\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binDir
}

// run runs a command and returns its stdout, failing the test on error.
func run(t *testing.T, env []string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\nstdout: %s\nstderr: %s", name, strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

func needTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s not installed (scripts/install-deps.sh installs it)", tool)
			}
			t.Skipf("%s not installed (scripts/install-deps.sh installs it)", tool)
		}
	}
}

// registry is a docker-registry started on a free loopback port with its
// own configuration, and its access log.
type registry struct {
	Addr string
	log  *os.File
}

func startRegistry(t *testing.T) *registry {
	t.Helper()
	needTools(t, "docker-registry")
	dir := t.TempDir()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	cfg := fmt.Sprintf(`version: 0.1
log: {level: warn, accesslog: {disabled: false}}
storage: {filesystem: {rootdirectory: %s}, delete: {enabled: true}}
http: {addr: %s}
`, filepath.Join(dir, "data"), addr)
	cfgPath := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "access.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("docker-registry", "serve", cfgPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		logf.Close()
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("registry on %s did not answer: %v", addr, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return &registry{Addr: addr, log: logf}
}

// containersEnv is a private podman/skopeo configuration: its own store,
// containers.conf, registries.conf (the loopback registry insecure) and
// policy, passed through the environment.
type containersEnv struct {
	Dir, GraphRoot, RunRoot, Policy string
	Env                             []string
}

func newContainersEnv(t *testing.T, registryAddr string) *containersEnv {
	t.Helper()
	needTools(t, "podman", "skopeo", "runc")
	dir := t.TempDir()
	ce := &containersEnv{Dir: dir, GraphRoot: filepath.Join(dir, "graph"), RunRoot: filepath.Join(dir, "run"), Policy: filepath.Join(dir, "policy.json")}
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cc := write("containers.conf", fmt.Sprintf(`[containers]
netns = "none"
log_driver = "k8s-file"
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = %q
tmp_dir = %q
`, filepath.Join(dir, "events.log"), filepath.Join(dir, "tmp")))
	sc := write("storage.conf", fmt.Sprintf(`[storage]
driver = "overlay"
graphroot = %q
runroot = %q
[storage.options.overlay]
mountopt = "nodev"
`, ce.GraphRoot, ce.RunRoot))
	rc := write("registries.conf", fmt.Sprintf(`unqualified-search-registries = []
[[registry]]
location = %q
insecure = true
`, registryAddr))
	write("policy.json", `{"default":[{"type":"insecureAcceptAnything"}]}`)
	ce.Env = []string{"CONTAINERS_CONF=" + cc, "CONTAINERS_STORAGE_CONF=" + sc, "CONTAINERS_REGISTRIES_CONF=" + rc}
	t.Cleanup(func() { ce.cleanup(t) })
	return ce
}

// cleanup unmounts what podman left below the test's store and removes the
// cgroups it made.
func (ce *containersEnv) cleanup(t *testing.T) {
	exec.Command("podman", "--root", ce.GraphRoot, "--runroot", ce.RunRoot, "image", "unmount", "--all").Run()
	exec.Command("podman", "--root", ce.GraphRoot, "--runroot", ce.RunRoot, "rm", "-af").Run()
	f, err := os.Open("/proc/self/mountinfo")
	if err == nil {
		var mounts []string
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) > 4 && strings.HasPrefix(fields[4], ce.Dir) {
				mounts = append(mounts, fields[4])
			}
		}
		f.Close()
		for i := len(mounts) - 1; i >= 0; i-- {
			unix.Unmount(mounts[i], unix.MNT_DETACH)
		}
	}
	matches, _ := filepath.Glob("/sys/fs/cgroup/*/libpod_parent")
	for _, m := range matches {
		os.Remove(m)
	}
}

func (ce *containersEnv) podman(t *testing.T, args ...string) string {
	t.Helper()
	return run(t, ce.Env, "podman", append([]string{"--root", ce.GraphRoot, "--runroot", ce.RunRoot}, args...)...)
}

func (ce *containersEnv) skopeo(t *testing.T, args ...string) string {
	t.Helper()
	return run(t, ce.Env, "skopeo", append([]string{"--policy", ce.Policy}, args...)...)
}
