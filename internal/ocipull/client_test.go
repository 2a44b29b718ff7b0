package ocipull

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/mossfs/mossfs/internal/ocitest"
	"go.podman.io/image/v5/types"
)

// registryClient writes into dir what a client of the loopback registry
// needs, as podman's configuration would give it: a registries.conf that
// marks the registry insecure (plain HTTP), a policy that accepts anything,
// an empty auth.json and a blob-info cache of its own. It returns the
// system context that names them and the policy's path.
func registryClient(tb testing.TB, reg *ocitest.Registry, dir string) (*types.SystemContext, string) {
	tb.Helper()
	sys := &types.SystemContext{
		SystemRegistriesConfPath:    filepath.Join(dir, "registries.conf"),
		SystemRegistriesConfDirPath: filepath.Join(dir, "none"),
		AuthFilePath:                filepath.Join(dir, "auth.json"),
		BlobInfoCacheDir:            filepath.Join(dir, "cache"),
	}
	policy := filepath.Join(dir, "policy.json")
	for path, content := range map[string]string{
		sys.SystemRegistriesConfPath: fmt.Sprintf("unqualified-search-registries = []\n[[registry]]\nlocation = %q\ninsecure = true\n", reg.Host),
		policy:                       `{"default":[{"type":"insecureAcceptAnything"}]}`,
		sys.AuthFilePath:             `{}`,
	} {
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			tb.Fatal(err)
		}
	}
	return sys, policy
}
