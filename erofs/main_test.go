package erofs

import (
	"os"
	"strings"
	"testing"

	"github.com/mossfs/mossfs/internal/testenv"
)

// TestMain runs the package's tests in a private mount namespace, so the
// kernel mount tests can neither disturb nor leak into the host's mounts.
// Fuzzing runs directly: its workers talk to the coordinator over inherited
// file descriptors that the re-executed child would not have (and fuzz runs
// select no mount tests).
func TestMain(m *testing.M) {
	for _, a := range os.Args[1:] {
		if strings.HasPrefix(a, "-test.fuzz") {
			os.Exit(m.Run())
		}
	}
	testenv.MainInMountNS(m)
}
