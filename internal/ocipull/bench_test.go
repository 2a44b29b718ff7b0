package ocipull

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/mossfs/mossfs/internal/gentree"
	"github.com/mossfs/mossfs/internal/ocitest"
	"github.com/mossfs/mossfs/internal/state"
	"github.com/mossfs/mossfs/internal/testenv"
	"go.podman.io/image/v5/types"
)

// BenchmarkPullVsPodman pulls image A (the generated tree, gentree.Small;
// Full, ~800 MB in 65k entries, with MOSSFS_BENCH_FULL=1; with
// MOSSFS_BENCH_DEBIAN=1 a debootstrapped Debian 12 tree near 1 GB, see
// ocitest.DebianTar; one gzip layer) from the loopback docker-registry with image pull, with skopeo copy to an
// OCI layout, and with podman pull (blob-info cache emptied and podman's
// store emptied before each), all in the same run, and reports the times
// and the ratio to podman's. Then it pulls B (90% of A's files) after A and
// reports both stores' growth for the two images.
func BenchmarkPullVsPodman(b *testing.B) {
	testenv.RequireMountNS(b)
	spec := gentree.FromEnv()
	reg := ocitest.StartRegistry(b)
	c := ocitest.NewContainers(b, ocitest.Options{Registries: []string{reg.Host}})
	layout := filepath.Join(b.TempDir(), "layout")
	imageTar := 0 // bytes of A's tar, reported for the Debian image
	if os.Getenv("MOSSFS_BENCH_DEBIAN") == "1" {
		a, err := os.ReadFile(ocitest.DebianTar(b))
		if err != nil {
			b.Fatal(err)
		}
		imageTar = len(a)
		ocitest.WriteLayout(b, layout, "a", ocitest.Image{Layers: [][]byte{a}})
		ocitest.WriteLayout(b, layout, "b", ocitest.Image{Layers: [][]byte{ocitest.AlterTar(b, a)}})
	} else {
		ocitest.WriteLayout(b, layout, "a", ocitest.Image{Layers: [][]byte{ocitest.GenTar(b, spec, false)}})
		ocitest.WriteLayout(b, layout, "b", ocitest.Image{Layers: [][]byte{ocitest.GenTar(b, spec, true)}})
	}
	for _, n := range []string{"a", "b"} {
		ocitest.ClearBlobInfoCache()
		c.Skopeo(b, "copy", "--dest-compress", "--dest-compress-format", "gzip", "oci:"+layout+":"+n, reg.Ref("bench/"+n+":1"))
	}
	sys := &types.SystemContext{DockerInsecureSkipTLSVerify: types.OptionalBoolTrue, BlobInfoCacheDir: b.TempDir()}
	var ours, skopeo, podman time.Duration
	var ourStore, podmanStore int64
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		root := filepath.Join(b.TempDir(), "moss")
		st, err := state.Create(root)
		if err != nil {
			b.Fatal(err)
		}
		c.Podman(b, "rmi", "--all", "--force")
		ocitest.ClearBlobInfoCache()
		dst := filepath.Join(b.TempDir(), "oci")
		b.StartTimer()

		t0 := time.Now()
		if _, err := Pull(context.Background(), st, reg.Ref("bench/a:1"), PullOptions{Sys: sys, PolicyPath: c.PolicyPath}); err != nil {
			b.Fatal(err)
		}
		ours += time.Since(t0)
		t0 = time.Now()
		c.Skopeo(b, "copy", "--src-tls-verify=false", reg.Ref("bench/a:1"), "oci:"+dst+":a")
		skopeo += time.Since(t0)
		t0 = time.Now()
		c.Podman(b, "pull", "-q", reg.Name("bench/a:1"))
		podman += time.Since(t0)

		// Growth of each store for A and B (podman's from empty).
		b.StopTimer()
		if _, err := Pull(context.Background(), st, reg.Ref("bench/b:1"), PullOptions{Sys: sys, PolicyPath: c.PolicyPath}); err != nil {
			b.Fatal(err)
		}
		c.Podman(b, "pull", "-q", reg.Name("bench/b:1"))
		ourStore = diskUsage(b, root)
		podmanStore = diskUsage(b, c.GraphRoot)
		b.StartTimer()
	}
	n := float64(b.N)
	b.ReportMetric(ours.Seconds()/n, "mossfs-s/pull")
	b.ReportMetric(skopeo.Seconds()/n, "skopeo-copy-s")
	b.ReportMetric(podman.Seconds()/n, "podman-pull-s")
	b.ReportMetric(ours.Seconds()/podman.Seconds(), "x-podman")
	b.ReportMetric(float64(ourStore)/(1<<20), "mossfs-store-MiB(A+B)")
	b.ReportMetric(float64(podmanStore)/(1<<20), "podman-store-MiB(A+B)")
	if imageTar > 0 {
		b.ReportMetric(float64(imageTar)/(1<<20), "image-tar-MiB")
	}
}

// diskUsage sums the allocated blocks under dir (each inode once).
func diskUsage(tb testing.TB, dir string) int64 {
	seen := map[uint64]bool{}
	var total int64
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return nil
		}
		st := fi.Sys().(*syscall.Stat_t)
		if !seen[st.Ino] {
			seen[st.Ino] = true
			total += st.Blocks * 512
		}
		return nil
	})
	return total
}
