package oci

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/mossfs/mossfs/internal/testenv"
)

// TestOnlyOCILinksContainersImage keeps containers/image and
// containers/storage out of every program but moss-oci, and their imports
// inside oci/... and internal/ocipull (its store side): mossfs goes into the initramfs, and moss-compose (also
// mkcomposefs) must start fast.
func TestOnlyOCILinksContainersImage(t *testing.T) {
	gobin := filepath.Join(runtime.GOROOT(), "bin", "go")
	for _, cmd := range []string{"../cmd/mossfs", "../cmd/moss-compose"} {
		for _, dep := range testenv.Deps(t, cmd) {
			if strings.HasPrefix(dep, "go.podman.io/") || strings.HasPrefix(dep, "github.com/mossfs/mossfs/oci") || dep == "github.com/mossfs/mossfs/internal/ocipull" {
				t.Errorf("%s links %s", cmd, dep)
			}
		}
	}
	// Which packages of the module import containers/* directly (tests included).
	out, err := exec.Command(gobin, "list", "-test", "-f", `{{.ImportPath}}|{{join .Imports " "}}`, "../...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list ../...: %v\n%s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		pkg, imports, ok := strings.Cut(line, "|")
		if !ok {
			continue
		}
		// "p [p.test]", "p_test [p.test]" and "p.test" all belong to p.
		base := strings.TrimSuffix(strings.TrimSuffix(strings.Fields(pkg)[0], ".test"), "_test")
		if base == "github.com/mossfs/mossfs/oci" || strings.HasPrefix(base, "github.com/mossfs/mossfs/oci/") ||
			base == "github.com/mossfs/mossfs/internal/ocipull" {
			continue
		}
		for _, imp := range strings.Fields(imports) {
			if strings.HasPrefix(imp, "go.podman.io/") {
				t.Errorf("package %s imports %s: keep containers/image imports in package oci", pkg, imp)
			}
		}
	}
}
