package main

import (
	"testing"

	"github.com/mossfs/mossfs/internal/testenv"
)

// TestMain runs the package's tests in a private mount namespace (as root),
// so the mount, switch and umount tests can neither touch nor leave behind
// host mounts. It is the one TestMain of package main: tests of other
// commands that mount need only call testenv.RequireMountNS.
func TestMain(m *testing.M) { testenv.MainInMountNS(m) }
