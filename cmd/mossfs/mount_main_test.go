package main

import (
	"os"
	"testing"

	"github.com/mossfs/mossfs/internal/testenv"
)

// asMossfsEnv makes the test binary behave as the mossfs command: the FUSE
// driver re-executes os.Executable() as its daemon ("mossfs fuse-serve"),
// which in a test is this binary.
const asMossfsEnv = "MOSSFS_TEST_AS_MOSSFS"

// TestMain runs the package's tests in a private mount namespace (as root),
// so the mount, switch and umount tests can neither touch nor leave behind
// host mounts. It is the one TestMain of package main: tests of other
// commands that mount need only call testenv.RequireMountNS.
func TestMain(m *testing.M) {
	if os.Getenv(asMossfsEnv) == "1" {
		main()
		os.Exit(0)
	}
	testenv.MainInMountNS(m)
}
