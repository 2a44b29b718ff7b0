package main

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// TestLinksNoStoneReader keeps the stone reader and what it needs out of
// mossfs (see package stoneapi): their package initialisation (CPU probes
// that trap to the hypervisor on a virtual machine, CRC tables) cost every
// mossfs process 0.3 ms of CPU at start, a fifth of what mossfs --version
// spent over an empty Go program.
func TestLinksNoStoneReader(t *testing.T) {
	gobin := filepath.Join(runtime.GOROOT(), "bin", "go")
	out, err := exec.Command(gobin, "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		if dep == "github.com/mossfs/mossfs/internal/stone" || strings.HasPrefix(dep, "github.com/klauspost/") || strings.HasPrefix(dep, "github.com/zeebo/") {
			t.Errorf("mossfs links %s", dep)
		}
	}
}
