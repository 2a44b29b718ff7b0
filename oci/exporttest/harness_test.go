package exporttest

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
)

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// binaries builds moss-compose, moss-oci and mossfs once per test binary (static, as
// make build does) and returns their directory.
func binaries(t *testing.T) string {
	t.Helper()
	return benchBinaries(t)
}

func benchBinaries(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "exporttest-bin-")
		if buildErr != nil {
			return
		}
		cmd := exec.Command("go", "build", "-o", binDir+"/", "github.com/mossfs/mossfs/cmd/moss-compose", "github.com/mossfs/mossfs/cmd/moss-oci", "github.com/mossfs/mossfs/cmd/mossfs")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %w\n%s", err, out)
			return
		}
		buildErr = os.Symlink("moss-compose", binDir+"/mkcomposefs")
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binDir
}

// run runs a command and returns its stdout, failing the test on error.
func run(t *testing.T, env []string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\nstdout: %s\nstderr: %s", name, strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

func needTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s not installed (scripts/install-deps.sh installs it)", tool)
			}
			t.Skipf("%s not installed (scripts/install-deps.sh installs it)", tool)
		}
	}
}
