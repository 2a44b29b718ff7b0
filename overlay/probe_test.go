package overlay

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/mossfs/mossfs/internal/testenv"
	"github.com/mossfs/mossfs/mounttuck"
	"golang.org/x/sys/unix"
)

// kernelAtLeast reports whether the running kernel is at least major.minor.
func kernelAtLeast(rel string, major, minor int) bool {
	var a, b int
	fmt.Sscanf(rel, "%d.%d", &a, &b)
	return a > major || a == major && b >= minor
}

func TestProbe(t *testing.T) {
	testenv.RequireMountNS(t)
	before, _ := mounttuck.ReadMountInfo()
	dir := t.TempDir()
	rep := Probe(dir)
	for _, f := range rep.Features {
		t.Logf("%-26s %-5v %s", f.Name, f.OK, f.Detail)
	}
	if len(rep.Features) != 11 {
		t.Errorf("%d features, want 11", len(rep.Features))
	}
	// Probing leaves nothing behind: no mounts, no files.
	after, _ := mounttuck.ReadMountInfo()
	if len(after) != len(before) {
		t.Errorf("probe changed the mount table: %d → %d entries", len(before), len(after))
	}
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Errorf("probe left %d files in %s", len(left), dir)
	}
	if !kernelAtLeast(rep.Kernel, 6, 15) {
		t.Logf("kernel %s: feature expectations are for 6.15+", rep.Kernel)
		return
	}
	for _, name := range []string{FeatNewMountAPI, FeatErofsLoop, FeatDataOnlyLowers, FeatLayerKeys,
		FeatDetachedLayers, FeatOverlayVerity, FeatMountBeneath} {
		if f := rep.Get(name); !f.OK {
			t.Errorf("%s not found on kernel %s: %s", name, rep.Kernel, f.Detail)
		}
	}
}

func TestProbeTmpfsNeedsLoop(t *testing.T) {
	testenv.RequireMountNS(t)
	rep := Probe(onTmpfs(t))
	if f := rep.Get(FeatErofsFile); f.OK {
		t.Errorf("file-backed EROFS reported working on tmpfs (kernel.md: ENOTBLK)")
	} else {
		t.Logf("%s: %s", f.Name, f.Detail)
	}
	if !rep.Get(FeatErofsLoop).OK {
		t.Errorf("loop fallback: %s", rep.Get(FeatErofsLoop).Detail)
	}
}

// TestPrivateMountNSLeavesMainThread checks that the private-namespace
// helper never moves the main thread (whose namespace /proc/self shows).
func TestPrivateMountNSLeavesMainThread(t *testing.T) {
	testenv.RequireMountNS(t)
	for range 50 {
		if err := inPrivateMountNS(func() error { return nil }); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	if err := unix.Mount("probe-test", dir, "tmpfs", 0, ""); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(dir, unix.MNT_DETACH)
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), " "+dir+" ") {
		t.Fatalf("a new mount is missing from /proc/self/mountinfo: the main thread left the namespace")
	}
}
