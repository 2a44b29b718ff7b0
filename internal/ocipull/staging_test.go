package ocipull

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/mossfs/mossfs/internal/gentree"
	"github.com/mossfs/mossfs/internal/ocitest"
	"github.com/mossfs/mossfs/internal/state"
	"go.podman.io/image/v5/docker/reference"
	"go.podman.io/image/v5/types"
)

// pullHelperEnv carries TestPullHelper's arguments (JSON) to the test
// binary that TestCrashedPartialPull runs and kills.
const pullHelperEnv = "MOSSFS_TEST_PULL_HELPER"

type pullHelperArgs struct {
	Root, Ref, Policy, Conf, Auth string
}

// TestPullHelper is not a test: TestCrashedPartialPull runs the test binary
// with it to have a partial pull in a process of its own, killed mid-way.
func TestPullHelper(t *testing.T) {
	v := os.Getenv(pullHelperEnv)
	if v == "" {
		t.Skip("a helper process of TestCrashedPartialPull")
	}
	var a pullHelperArgs
	if err := json.Unmarshal([]byte(v), &a); err != nil {
		t.Fatal(err)
	}
	st, err := state.Open(a.Root)
	if err != nil {
		t.Fatal(err)
	}
	sys := &types.SystemContext{SystemRegistriesConfPath: a.Conf, SystemRegistriesConfDirPath: filepath.Join(filepath.Dir(a.Conf), "none"),
		AuthFilePath: a.Auth, BlobInfoCacheDir: filepath.Join(a.Root, "..", "cache")}
	if _, err := Pull(context.Background(), st, a.Ref, PullOptions{Sys: sys, PolicyPath: a.Policy, Fetcher: &PartialLayers{State: st, Sys: sys}}); err != nil {
		t.Fatal(err)
	}
}

func stagingDirs(t *testing.T, root string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(root, state.StagingPrefix+"*"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestCrashedPartialPull kills (SIGKILL) a partial pull from Debian's
// docker-registry once its fetched files are staged, as a crash would: the
// staging directory stays behind. gc removes it; the crash recovery of the
// next lock does too; and a pull afterwards completes and leaves none.
func TestCrashedPartialPull(t *testing.T) {
	reg := ocitest.StartRegistry(t)
	dir := t.TempDir()
	sys, policy := registryClient(t, reg, dir)
	conf, auth := sys.SystemRegistriesConfPath, sys.AuthFilePath
	lay := filepath.Join(dir, "layout")
	ocitest.WriteLayout(t, lay, "c", ocitest.Image{Layers: [][]byte{
		ocitest.Tar(t, ocitest.Entry{Name: "etc/", Type: tar.TypeDir}, ocitest.Entry{Name: "etc/image", Body: "c\n"}),
		ocitest.Tar(t, genEntries(gentree.Tiny, false)...),
	}})
	named, _ := reference.ParseNormalizedNamed(reg.Name("crash/c:1"))
	pushZstdChunked(t, lay, "c", named, sys)
	root := filepath.Join(dir, "store")
	st, err := state.Create(root)
	if err != nil {
		t.Fatal(err)
	}
	args, _ := json.Marshal(pullHelperArgs{Root: root, Ref: reg.Ref("crash/c:1"), Policy: policy, Conf: conf, Auth: auth})
	crashPull := func() {
		t.Helper()
		cmd := exec.Command(os.Args[0], "-test.run=^TestPullHelper$", "-test.count=1")
		cmd.Env = append(os.Environ(), pullHelperEnv+"="+string(args), state.CrashPointEnv+"="+state.CPPullStaged+"@2") // in the big layer
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || !ee.Sys().(syscall.WaitStatus).Signaled() {
			t.Fatalf("the pull was not killed at %s: %v\n%s", state.CPPullStaged, err, out)
		}
		left := stagingDirs(t, root)
		if len(left) != 1 {
			t.Fatalf("the killed pull left staging directories %v, want one", left)
		}
		var files int
		filepath.Walk(left[0], func(_ string, fi os.FileInfo, _ error) error {
			if fi != nil && fi.Mode().IsRegular() {
				files++
			}
			return nil
		})
		if files == 0 {
			t.Fatalf("%s holds no staged file: the pull was killed before it fetched anything", left[0])
		}
		t.Logf("killed pull left %s with %d staged files", left[0], files)
	}

	crashPull()
	res, err := st.GC(state.GCOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.StagingRemoved != 1 || len(stagingDirs(t, root)) != 0 {
		t.Errorf("gc removed %d staging directories, %v left", res.StagingRemoved, stagingDirs(t, root))
	}

	crashPull()
	lk, err := st.Lock()
	if err != nil {
		t.Fatal(err)
	}
	lk.Unlock()
	if left := stagingDirs(t, root); len(left) != 0 {
		t.Errorf("the next lock left %v", left)
	}

	r, err := Pull(context.Background(), st, reg.Ref("crash/c:1"), PullOptions{Sys: sys, PolicyPath: policy, Fetcher: &PartialLayers{State: st, Sys: sys}})
	if err != nil {
		t.Fatalf("pull after the crashes: %v", err)
	}
	if r.Partial == nil || r.Partial.PartialLayers != 2 {
		t.Errorf("pull after the crashes: partial totals %+v", r.Partial)
	}
	if left := stagingDirs(t, root); len(left) != 0 {
		t.Errorf("a completed pull left %v", left)
	}
	if v, err := st.Verify(state.VerifyOptions{NoQuarantine: true}); err != nil || !v.OK() {
		t.Errorf("verify after the crashes: %+v %v", v, err)
	}
}
