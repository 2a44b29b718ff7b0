package exporttest

import (
	"os"
	"testing"

	"github.com/mossfs/mossfs/internal/testenv"
	"github.com/mossfs/mossfs/oci"
)

// TestMain: containers/storage re-executes the test binary to apply layers
// (the child stops in ReexecInit); the tests run in a private mount
// namespace, so what c/storage and podman mount dies with it.
func TestMain(m *testing.M) {
	if oci.ReexecInit() {
		return
	}
	testenv.MainInMountNS(removeBinaries{m})
}

// removeBinaries runs the tests, then removes the binaries they built.
type removeBinaries struct{ m *testing.M }

func (r removeBinaries) Run() int {
	code := r.m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	return code
}
