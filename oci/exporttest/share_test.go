package exporttest

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mossfs/mossfs/internal/ocitest"
)

// writeRandomFiles writes n files of size incompressible bytes, named
// prefix000…, their content seeded by (seed, index).
func writeRandomFiles(t *testing.T, dir, prefix string, seed uint64, n, size int) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		r := rand.New(rand.NewPCG(seed, uint64(i)))
		b := make([]byte, size)
		for j := range b {
			b[j] = byte(r.Uint32())
		}
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("%s%03d", prefix, i)), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// layerSize reads the compressed size of an image's only layer from the
// registry's manifest (skopeo's view).
func layerSize(t *testing.T, ce *ocitest.Containers, ref string) (string, int64) {
	t.Helper()
	var m struct {
		Layers []struct {
			Digest string
			Size   int64
		}
	}
	if err := json.Unmarshal(ce.Skopeo(t, "inspect", "--raw", "--tls-verify=false", ref), &m); err != nil || len(m.Layers) != 1 {
		t.Fatalf("manifest of %s: %v %+v", ref, err, m)
	}
	return m.Layers[0].Digest, m.Layers[0].Size
}

// TestPodmanPullsFromStore: the OS store holds transaction T; image B
// shares 90% of T's files (by size) and is pushed as exported (zstd:chunked). Podman
// (Debian's 4.3, its containers/storage) pulls B with partial pulls on and
// the store's sha256 index as ostree_repos: the registry's access log
// counts what it fetched, against a pull without the index.
func TestPodmanPullsFromStore(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("podman as root")
	}
	bin := binaries(t)
	reg := ocitest.StartRegistry(t)
	const files, fileSize = 90, 32 << 10
	srcA := filepath.Join(t.TempDir(), "a")
	writeRandomFiles(t, srcA, "shared", 1, files, fileSize)
	rootA := filepath.Join(t.TempDir(), "osstore")
	run(t, nil, filepath.Join(bin, "moss-compose"), "compose", "-q", "--root", rootA, "--tree", srcA)

	srcB := filepath.Join(t.TempDir(), "b")
	writeRandomFiles(t, srcB, "shared", 1, files, fileSize)
	writeRandomFiles(t, srcB, "new", 2, files/9, fileSize)
	rootB := filepath.Join(t.TempDir(), "elsewhere")
	run(t, nil, filepath.Join(bin, "moss-compose"), "compose", "-q", "--root", rootB, "--tree", srcB)
	export(t, bin, rootB, reg.Ref("mossfs/b:1"), "--tls-verify=false", "--env", "PATH=/usr/bin")
	export(t, bin, rootB, reg.Ref("mossfs/b2:1"), "--tls-verify=false", "--env", "PATH=/usr/bin")
	export(t, bin, rootB, reg.Ref("mossfs/b3:1"), "--tls-verify=false", "--env", "PATH=/usr/bin")

	pull := func(repo, extra string) (int64, int64) {
		ce := ocitest.NewContainers(t, ocitest.Options{Registries: []string{reg.Host}, ExtraStorageConf: extra})
		digest, size := layerSize(t, ce, reg.Ref(repo+":1"))
		ce.Podman(t, "pull", "-q", "--tls-verify=false", reg.Name(repo+":1"))
		mnt := strings.TrimSpace(string(ce.Podman(t, "image", "mount", reg.Name(repo+":1"))))
		defer ce.PodmanErr("image", "unmount", reg.Name(repo+":1"))
		for _, name := range []string{"shared007", "new003"} {
			got, err := os.ReadFile(filepath.Join(mnt, "usr", name))
			want, _ := os.ReadFile(filepath.Join(srcB, name))
			if err != nil || string(got) != string(want) {
				t.Errorf("%s: podman's image has wrong /usr/%s (%v)", repo, name, err)
			}
		}
		fetched, _ := reg.BlobBytes(t, repo, digest)
		return fetched, size
	}
	// Debian's podman 4.3 (containers/storage 1.43): measured, not
	// asserted; it fetches the whole layer (see the closing note of issue 11).
	shared := fmt.Sprintf("[storage.options.pull_options]\nenable_partial_images = \"true\"\nostree_repos = %q\n", filepath.Join(rootA, "sha256"))
	podmanFetched, size := pull("mossfs/b", shared)
	t.Logf("podman 4.3 with the store's index: %d of %d bytes (%.1f%%)", podmanFetched, size, 100*float64(podmanFetched)/float64(size))

	// go.podman.io/storage (what podman 5 runs), with and without the index.
	check := func(repo string, opts map[string]string) int64 {
		ce := ocitest.NewContainers(t, ocitest.Options{Registries: []string{reg.Host}})
		digest, _ := layerSize(t, ce, reg.Ref(repo+":1"))
		store, id := cstoragePull(t, reg.Name(repo+":1"), opts)
		mnt := mountImage(t, store, id)
		for _, name := range []string{"shared007", "new003"} {
			got, err := os.ReadFile(filepath.Join(mnt, "usr", name))
			want, _ := os.ReadFile(filepath.Join(srcB, name))
			if err != nil || string(got) != string(want) {
				t.Errorf("%s: containers/storage's image has wrong /usr/%s (%v)", repo, name, err)
			}
		}
		fetched, _ := reg.BlobBytes(t, repo, digest)
		return fetched
	}
	withIndex := check("mossfs/b2", map[string]string{"enable_partial_images": "true", "ostree_repos": filepath.Join(rootA, "sha256")})
	without := check("mossfs/b3", map[string]string{"enable_partial_images": "true"})
	t.Logf("containers/storage library: layer %d bytes; fetched %d with the store's index (%.1f%%), %d without (%.1f%%)",
		size, withIndex, 100*float64(withIndex)/float64(size), without, 100*float64(without)/float64(size))
	if float64(withIndex) > 0.15*float64(size) {
		t.Errorf("with the store's sha256 index containers/storage fetched %d of %d bytes (%.1f%%), want ≤ 15%%", withIndex, size, 100*float64(withIndex)/float64(size))
	}
	if float64(without) < 0.9*float64(size) {
		t.Errorf("without the index containers/storage fetched only %d of %d bytes: the index is not what saved the bytes", without, size)
	}
}
