// Package oci is mossfs's OCI library: it reads and writes OCI container
// images through containers/image (go.podman.io/image/v5, the library inside
// podman and skopeo, so registries.conf, auth.json and policy.json apply as
// they do there) on any of the transports podman spells (docker://, oci:,
// oci-archive:, docker-archive:, containers-storage:, dir:). Subpackage layer
// applies layer tars onto a tree, chunked reads zstd:chunked and eStargz
// layers partially; this package writes reproducible layers (WriteLayer),
// exports a tree as an image (Export, RootFS), checks the composefs seal
// label (VerifySeal) and builds SystemContexts from command-line options.
//
// Pulling into a mossfs state root (records, the sha256 index, staging) is
// internal/ocipull, built on this package: the state root's types are not
// public. Every containers/image and containers/storage import of the module
// lives in oci/... and internal/ocipull (and their tests), so that no other
// package, and no other package's test binary, links them. Only the moss-oci
// command imports them: linking containers/image adds about 10 ms to a
// program's start-up, which moss-compose (also run as mkcomposefs, once per
// layer by containers/storage) must not pay, and mossfs (in the initramfs)
// must not grow.
package oci

import (
	"fmt"
	"strings"

	"go.podman.io/image/v5/types"

	// The transports a reference may name; each registers itself. Not
	// alltransports: that also links docker-daemon (the moby client), sif
	// and openshift, which mossfs does not offer.
	_ "go.podman.io/image/v5/directory"
	_ "go.podman.io/image/v5/docker"
	_ "go.podman.io/image/v5/docker/archive"
	_ "go.podman.io/image/v5/oci/archive"
	_ "go.podman.io/image/v5/oci/layout"
	_ "go.podman.io/image/v5/storage"
)

// SysOptions are the command-line options that become a SystemContext.
type SysOptions struct {
	Platform  string // OS/ARCH[/VARIANT]
	AuthFile  string
	Creds     string // USER:PASSWORD
	TLSVerify bool   // false also allows plain HTTP
}

// SystemContext builds the containers/image context of a pull: the
// destination's (auth file, credentials, TLS) plus the platform choice.
func SystemContext(o SysOptions) (*types.SystemContext, error) {
	sys, err := DestSystemContext(o.AuthFile, o.Creds, o.TLSVerify)
	if err != nil {
		return nil, err
	}
	if o.Platform != "" {
		parts := strings.Split(o.Platform, "/")
		if len(parts) < 2 || len(parts) > 3 || parts[0] == "" || parts[1] == "" {
			return nil, fmt.Errorf("--platform %q: want OS/ARCH[/VARIANT]", o.Platform)
		}
		sys.OSChoice, sys.ArchitectureChoice = parts[0], parts[1]
		if len(parts) == 3 {
			sys.VariantChoice = parts[2]
		}
	}
	return sys, nil
}
