package ocitest

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/mossfs/mossfs/internal/testenv"
	"golang.org/x/sys/unix"
)

// Options adjust the configuration NewContainers writes.
type Options struct {
	// Registries are host:port addresses podman and skopeo reach over plain
	// HTTP (insecure=true), e.g. a Registry's Host.
	Registries []string
	// OverlayMountOpt is storage.conf's [storage.options.overlay] mountopt
	// ("nodev" when empty).
	OverlayMountOpt string
	// ExtraStorageConf is appended to storage.conf (TOML, e.g. a
	// [storage.options.pull_options] table).
	ExtraStorageConf string
	// ExtraOverlayConf is added inside [storage.options.overlay] (TOML keys).
	ExtraOverlayConf string
}

// Containers is a private configuration and store for podman and skopeo.
type Containers struct {
	Dir            string // everything below lives here
	GraphRoot      string // podman --root
	RunRoot        string // podman --runroot
	TmpDir         string
	ContainersConf string
	StorageConf    string
	RegistriesConf string
	PolicyPath     string   // policy.json accepting anything (skopeo --policy)
	AuthFile       string   // auth.json ({} at first), REGISTRY_AUTH_FILE
	Env            []string // os.Environ() plus CONTAINERS_CONF, CONTAINERS_STORAGE_CONF, CONTAINERS_REGISTRIES_CONF, TMPDIR
}

// NewContainers writes the configuration into a new test directory. The
// test is skipped (failed under CI=true) if podman or skopeo is missing.
func NewContainers(t testing.TB, o Options) *Containers {
	t.Helper()
	requireTool(t, "podman")
	requireTool(t, "skopeo")
	isolateBlobInfoCache(t)
	dir := t.TempDir()
	c := &Containers{
		Dir:            dir,
		GraphRoot:      filepath.Join(dir, "graph"),
		RunRoot:        filepath.Join(dir, "run"),
		TmpDir:         filepath.Join(dir, "tmp"),
		ContainersConf: filepath.Join(dir, "containers.conf"),
		StorageConf:    filepath.Join(dir, "storage.conf"),
		RegistriesConf: filepath.Join(dir, "registries.conf"),
		PolicyPath:     filepath.Join(dir, "policy.json"),
		AuthFile:       filepath.Join(dir, "auth.json"),
	}
	for _, d := range []string{c.GraphRoot, c.RunRoot, c.TmpDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	mountopt := o.OverlayMountOpt
	if mountopt == "" {
		mountopt = "nodev"
	}
	files := map[string]string{
		c.ContainersConf: fmt.Sprintf(`[containers]
netns = "none"
log_driver = "k8s-file"
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = %q
tmp_dir = %q
image_copy_tmp_dir = %q
`, filepath.Join(dir, "events.log"), c.TmpDir, c.TmpDir),
		c.StorageConf: fmt.Sprintf(`[storage]
driver = "overlay"
graphroot = %q
runroot = %q

[storage.options.overlay]
mountopt = %q
%s
%s
`, c.GraphRoot, c.RunRoot, mountopt, o.ExtraOverlayConf, o.ExtraStorageConf),
		c.PolicyPath: `{"default": [{"type": "insecureAcceptAnything"}]}` + "\n",
		c.AuthFile:   "{}\n",
	}
	var reg strings.Builder
	reg.WriteString("unqualified-search-registries = []\n")
	for _, r := range o.Registries {
		fmt.Fprintf(&reg, "\n[[registry]]\nlocation = %q\ninsecure = true\n", r)
	}
	files[c.RegistriesConf] = reg.String()
	for p, s := range files {
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	c.Env = append(slices.DeleteFunc(os.Environ(), func(kv string) bool {
		k, _, _ := strings.Cut(kv, "=")
		return k == "CONTAINERS_CONF" || k == "CONTAINERS_STORAGE_CONF" || k == "CONTAINERS_REGISTRIES_CONF" || k == "TMPDIR" || k == "REGISTRY_AUTH_FILE"
	}),
		"CONTAINERS_CONF="+c.ContainersConf,
		"CONTAINERS_STORAGE_CONF="+c.StorageConf,
		"CONTAINERS_REGISTRIES_CONF="+c.RegistriesConf,
		"REGISTRY_AUTH_FILE="+c.AuthFile,
		"TMPDIR="+c.TmpDir,
	)
	t.Cleanup(func() { c.cleanup(t) })
	return c
}

// PodmanArgs are the global options isolating podman's store.
func (c *Containers) PodmanArgs() []string {
	return []string{"--root", c.GraphRoot, "--runroot", c.RunRoot, "--storage-driver", "overlay", "--tmpdir", c.TmpDir}
}

// PodmanErr runs podman with the isolated store and returns its stdout;
// the error carries stderr.
func (c *Containers) PodmanErr(args ...string) ([]byte, error) {
	return c.run("podman", append(c.PodmanArgs(), args...))
}

// Podman runs podman and fails the test on error.
func (c *Containers) Podman(t testing.TB, args ...string) []byte {
	t.Helper()
	out, err := c.PodmanErr(args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// SkopeoErr runs skopeo with the policy and registries.conf; stdout is returned.
func (c *Containers) SkopeoErr(args ...string) ([]byte, error) {
	// skopeo 1.9 ignores CONTAINERS_REGISTRIES_CONF; its hidden flag does not.
	return c.run("skopeo", append([]string{"--policy", c.PolicyPath, "--registries-conf", c.RegistriesConf}, args...))
}

// Skopeo runs skopeo and fails the test on error.
func (c *Containers) Skopeo(t testing.TB, args ...string) []byte {
	t.Helper()
	out, err := c.SkopeoErr(args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func (c *Containers) run(prog string, args []string) ([]byte, error) {
	cmd := exec.Command(prog, args...)
	cmd.Env = c.Env
	cmd.Dir = c.Dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("%s %s: %w\n%s", prog, strings.Join(args, " "), err, stderr.Bytes())
	}
	return stdout.Bytes(), nil
}

// cleanup unmounts what podman left below the directory (deepest first) and
// removes the empty libpod_parent cgroups (rmdir fails, harmlessly, on one
// another test is using).
func (c *Containers) cleanup(t testing.TB) {
	// Containers left running or mounted by a failed test.
	c.run("podman", append(c.PodmanArgs(), "rm", "--all", "--force"))
	c.run("podman", append(c.PodmanArgs(), "image", "unmount", "--all", "--force"))
	for _, m := range mountsBelow(c.Dir) {
		if err := unix.Unmount(m, unix.MNT_DETACH); err != nil && err != unix.EINVAL && err != unix.ENOENT {
			t.Logf("unmounting %s: %v", m, err)
		}
	}
	cgroups, _ := filepath.Glob("/sys/fs/cgroup/*/libpod_parent")
	if p := "/sys/fs/cgroup/libpod_parent"; fileExists(p) {
		cgroups = append(cgroups, p)
	}
	for _, cg := range cgroups {
		removeCgroup(cg)
	}
}

// removeCgroup removes an empty cgroup tree, children first.
func removeCgroup(dir string) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		if e.IsDir() {
			removeCgroup(filepath.Join(dir, e.Name()))
		}
	}
	unix.Rmdir(dir)
}

// mountsBelow lists the mount points below dir, deepest (latest) first.
func mountsBelow(dir string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMountinfo(fields[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	slices.Reverse(out)
	return out
}

func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v byte
			if _, err := fmt.Sscanf(s[i+1:i+4], "%03o", &v); err == nil {
				b.WriteByte(v)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

var (
	blobInfoOnce     sync.Once
	blobInfoIsolated bool
)

// ClearBlobInfoCache empties the blob-info cache podman and skopeo share,
// where isolateBlobInfoCache made it this process's own (else it does
// nothing): a push that follows another of the same layers then
// compresses as told instead of reusing the other push's blobs.
func ClearBlobInfoCache() {
	if blobInfoIsolated {
		os.Remove("/var/lib/containers/cache/blob-info-cache-v1.boltdb")
	}
}

// isolateBlobInfoCache mounts a tmpfs over /var/lib/containers/cache, where
// podman and skopeo keep their blob-info cache, when running in the private
// mount namespace of internal/testenv (never on the host's mounts).
func isolateBlobInfoCache(t testing.TB) {
	if !testenv.InPrivateMountNS() || os.Geteuid() != 0 {
		return
	}
	blobInfoOnce.Do(func() {
		const dir = "/var/lib/containers/cache"
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Logf("blob-info cache stays shared: %v", err)
			return
		}
		if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0700"); err != nil {
			t.Logf("blob-info cache stays shared: %v", err)
			return
		}
		blobInfoIsolated = true
	})
}
