package ocipull

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/mossfs/mossfs/internal/state"
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

// TestStoreContents: what an import stored through the sha256 index is
// found, and opened, by its plain sha256; anything else is not.
func TestStoreContents(t *testing.T) {
	s, err := state.Create(filepath.Join(t.TempDir(), "store"))
	if err != nil {
		t.Fatal(err)
	}
	content := []byte("partial pulls find me\n")
	if _, err := s.IndexedSink().Put(bytes.NewReader(content)); err != nil {
		t.Fatal(err)
	}
	c := StoreContents{State: s}
	if !c.HasSHA256(sha256.Sum256(content)) {
		t.Fatal("stored content not found by its sha256")
	}
	rc, err := c.OpenSHA256(sha256.Sum256(content))
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(rc)
	rc.Close()
	if !bytes.Equal(got, content) {
		t.Fatalf("read %q", got)
	}
	other := sha256.Sum256([]byte("absent"))
	if c.HasSHA256(other) {
		t.Error("absent content found")
	}
	if _, err := c.OpenSHA256(other); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("absent content: %v, want fs.ErrNotExist", err)
	}
}
