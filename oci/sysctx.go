package oci

import (
	"encoding/hex"
	"fmt"
	"strings"

	"go.podman.io/image/v5/types"
)

// DestSystemContext returns the system context of a destination: an auth
// file (as podman's --authfile), USER:PASSWORD credentials, and whether to
// verify TLS (false also allows plain HTTP).
func DestSystemContext(authfile, creds string, tlsVerify bool) (*types.SystemContext, error) {
	sys := &types.SystemContext{AuthFilePath: authfile}
	if creds != "" {
		u, p, ok := strings.Cut(creds, ":")
		if !ok || u == "" {
			return nil, fmt.Errorf("--creds: want USER:PASSWORD")
		}
		sys.DockerAuthConfig = &types.DockerAuthConfig{Username: u, Password: p}
	}
	if !tlsVerify {
		sys.DockerInsecureSkipTLSVerify = types.OptionalBoolTrue
		sys.OCIInsecureSkipTLSVerify = true
	}
	return sys, nil
}

// ParseHexDigest parses a 64-digit hex SHA-256 digest.
func ParseHexDigest(s string) ([32]byte, error) {
	var d [32]byte
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != 32 {
		return d, fmt.Errorf("bad digest %q", s)
	}
	copy(d[:], b)
	return d, nil
}
