package main

import (
	"strings"
	"testing"

	"github.com/mossfs/mossfs/internal/testenv"
)

// TestLinksNoStartupWeight keeps out of mossfs packages it does not use
// whose initialisation every mossfs process would pay at start:
//   - the stone reader and what it needs (see package stoneapi): CPU probes
//     that trap to the hypervisor on a virtual machine, CRC tables; 0.3 ms
//     of CPU, a fifth of what mossfs --version spent over an empty Go
//     program;
//   - mpb, the progress bars (see package progress): its dependencies
//     compile regular expressions and tables at start.
func TestLinksNoStartupWeight(t *testing.T) {
	for _, dep := range testenv.Deps(t, ".") {
		if dep == "github.com/mossfs/mossfs/internal/stone" || dep == "github.com/mossfs/mossfs/internal/progress" ||
			strings.HasPrefix(dep, "github.com/klauspost/") || strings.HasPrefix(dep, "github.com/zeebo/") ||
			strings.HasPrefix(dep, "github.com/vbauerster/") {
			t.Errorf("mossfs links %s", dep)
		}
	}
}
