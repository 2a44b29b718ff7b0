package exporttest

import (
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
	// Then the binaries the tests built go.
	testenv.MainInMountNS(testenv.ThenRemove(m, &binDir))
}
