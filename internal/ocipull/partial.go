package ocipull

import (
	"crypto/tls"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/mossfs/mossfs/internal/state"
	"github.com/mossfs/mossfs/oci/chunked"
	"go.podman.io/image/v5/docker/reference"
	"go.podman.io/image/v5/pkg/docker/config"
	"go.podman.io/image/v5/pkg/sysregistriesv2"
	"go.podman.io/image/v5/pkg/tlsclientconfig"
	"go.podman.io/image/v5/types"
)

// PartialRegistry returns the range-read client of package chunked for the
// repository of a docker:// reference, set up as containers/image sets up its
// own client (whose range reads, GetBlobAt, take internal types and cannot be
// called from here): plain http and unverified TLS when registries.conf marks
// the registry insecure or sys says --tls-verify=false, certificates from
// certs.d, credentials from sys (--creds) or auth.json. Mirrors are not
// consulted: range reads go to the registry the reference names.
func PartialRegistry(sys *types.SystemContext, ref reference.Named) (*chunked.Registry, error) {
	host := reference.Domain(ref)
	r := &chunked.Registry{Host: host, Repository: reference.Path(ref), UserAgent: "mossfs"}
	reg, err := sysregistriesv2.FindRegistry(sys, ref.Name())
	if err != nil {
		return nil, fmt.Errorf("registries.conf: %w", err)
	}
	if reg != nil && reg.Insecure {
		r.Insecure = true
	}
	if sys != nil && sys.DockerInsecureSkipTLSVerify == types.OptionalBoolTrue {
		r.Insecure = true
	}
	tc := &tls.Config{}
	for _, dir := range certDirs(sys, host) {
		if _, err := os.Stat(dir); err != nil {
			continue
		}
		if err := tlsclientconfig.SetupCertificates(dir, tc); err != nil {
			return nil, fmt.Errorf("certificates for %s in %s: %w", host, dir, err)
		}
		break
	}
	r.TLSConfig = tc
	auth, err := config.GetCredentialsForRef(sys, ref)
	if err != nil {
		return nil, fmt.Errorf("credentials for %s: %w", host, err)
	}
	r.Username, r.Password, r.IdentityToken = auth.Username, auth.Password, auth.IdentityToken
	return r, nil
}

// certDirs are where containers/image looks for a registry's certificates.
func certDirs(sys *types.SystemContext, host string) []string {
	if sys != nil && sys.DockerCertPath != "" {
		return []string{sys.DockerCertPath}
	}
	if sys != nil && sys.DockerPerHostCertDirPath != "" {
		return []string{filepath.Join(sys.DockerPerHostCertDirPath, host)}
	}
	return []string{filepath.Join("/etc/containers/certs.d", host), filepath.Join("/etc/docker/certs.d", host)}
}

// StoreContents is a store's content as a partial pull looks it up: by
// plain sha256 through the store's sha256 index.
type StoreContents struct{ State *state.State }

// HasSHA256 reports whether the index links content d to a stored object.
func (c StoreContents) HasSHA256(d [32]byte) bool {
	_, ok := c.State.IndexLookup(d)
	return ok
}

// OpenSHA256 opens the object holding content d.
func (c StoreContents) OpenSHA256(d [32]byte) (io.ReadCloser, error) {
	v, ok := c.State.IndexLookup(d)
	if !ok {
		return nil, fmt.Errorf("content sha256:%x: %w", d, fs.ErrNotExist)
	}
	return c.State.Store().Open(v)
}
