package erofs

import (
	"testing"

	"github.com/mossfs/mossfs/internal/testenv"
)

// TestMain runs the package's tests in a private mount namespace, so the
// kernel mount tests can neither disturb nor leak into the host's mounts.
func TestMain(m *testing.M) { testenv.MainInMountNS(m) }
