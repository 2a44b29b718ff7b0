package sharetest

import (
	"os"
	"testing"

	"github.com/mossfs/mossfs/internal/testenv"
	"go.podman.io/storage/pkg/reexec"
)

// TestMain: containers/storage re-executes this binary to apply layers;
// reexec.Init runs that work in the child, first thing. Then the tests run
// in a private mount namespace (they mount overlays, EROFS and podman's
// store); the process that runs them removes the binaries they built.
func TestMain(m *testing.M) {
	if reexec.Init() {
		os.Exit(0)
	}
	if testenv.InPrivateMountNS() || os.Geteuid() != 0 {
		code := m.Run()
		if binDir != "" {
			os.RemoveAll(binDir)
		}
		os.Exit(code)
	}
	testenv.MainInMountNS(m)
}
