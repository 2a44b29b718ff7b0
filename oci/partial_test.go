package oci

import (
	"os"
	"path/filepath"
	"testing"

	"go.podman.io/image/v5/docker/reference"
	"go.podman.io/image/v5/types"
)

// TestPartialRegistryConfig: the range client takes insecure from
// registries.conf and credentials from auth.json, as containers/image does.
func TestPartialRegistryConfig(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "registries.conf")
	os.WriteFile(conf, []byte("unqualified-search-registries = []\n[[registry]]\nlocation = \"127.0.0.1:5999\"\ninsecure = true\n"), 0o600)
	auth := filepath.Join(dir, "auth.json")
	os.WriteFile(auth, []byte(`{"auths":{"127.0.0.1:5999":{"auth":"dTpw"}}}`), 0o600) // u:p
	sys := &types.SystemContext{SystemRegistriesConfPath: conf, SystemRegistriesConfDirPath: filepath.Join(dir, "none"), AuthFilePath: auth}
	ref, err := reference.ParseNormalizedNamed("127.0.0.1:5999/some/image:1")
	if err != nil {
		t.Fatal(err)
	}
	r, err := PartialRegistry(sys, ref)
	if err != nil {
		t.Fatal(err)
	}
	if r.Host != "127.0.0.1:5999" || r.Repository != "some/image" || !r.Insecure || r.Username != "u" || r.Password != "p" {
		t.Fatalf("registry client %+v", r)
	}
	ref, _ = reference.ParseNormalizedNamed("example.com/other")
	r, err = PartialRegistry(sys, ref)
	if err != nil {
		t.Fatal(err)
	}
	if r.Insecure || r.Username != "" || r.Repository != "other" {
		t.Fatalf("registry not in the configuration: %+v", r)
	}
}
