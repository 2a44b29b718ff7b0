package mounttuck_test

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/mossfs/mossfs/erofs"
	"github.com/mossfs/mossfs/internal/gentree"
	"github.com/mossfs/mossfs/internal/testenv"
	"github.com/mossfs/mossfs/mounttuck"
	"github.com/mossfs/mossfs/overlay"
	"golang.org/x/sys/unix"
)

// Mount and switch latency for a generated transaction (gentree.Full, 65k
// entries, with MOSSFS_BENCH_FULL=1; gentree.Small otherwise), measured
// against moss's way in the same run: a hardlink farm of the same tree
// (cp -al) and renameat2(RENAME_EXCHANGE) of two farms. Each benchmark
// iteration takes many samples and reports p50/p99; the objects are absent,
// since mounting and switching never read them.

func benchSamples() int {
	if os.Getenv("MOSSFS_BENCH_FULL") == "1" {
		return 200
	}
	return 60
}

// benchImages writes the images of two transactions of the benchmark tree
// (same shape, different seeds) and an empty object directory.
func benchImages(b *testing.B, dir string) (images [2]string, objects string) {
	b.Helper()
	objects = filepath.Join(dir, "objects")
	os.Mkdir(objects, 0o755)
	for i := range images {
		spec := gentree.FromEnv()
		spec.Seed += uint64(i)
		img, err := erofs.BuildImage(gentree.Tree(spec), erofs.DefaultWriteOptions())
		if err != nil {
			b.Fatal(err)
		}
		images[i] = filepath.Join(dir, fmt.Sprintf("image-%d", i))
		if err := os.WriteFile(images[i], img, 0o644); err != nil {
			b.Fatal(err)
		}
	}
	return images, objects
}

func percentile(d []time.Duration, p float64) float64 {
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(float64(len(s)-1) * p)
	return float64(s[i]) / float64(time.Millisecond)
}

func BenchmarkMount(b *testing.B) {
	testenv.RequireMountNS(b)
	dir := b.TempDir()
	images, objects := benchImages(b, dir)
	target := filepath.Join(dir, "usr")
	os.Mkdir(target, 0o755)
	src := filepath.Join(dir, "src")
	os.Mkdir(src, 0o755)
	if _, err := gentree.Materialize(src, gentree.FromEnv()); err != nil {
		b.Fatal(err)
	}
	n := benchSamples()
	b.ResetTimer()
	for range b.N {
		// mossfs: build the overlay (EROFS + overlayfs) and attach it.
		var mount []time.Duration
		for i := range n {
			start := time.Now()
			fd, _, err := overlay.Mount(overlay.Options{Image: images[i%2], ObjectsDir: objects})
			if err != nil {
				b.Fatal(err)
			}
			err = unix.MoveMount(fd, "", unix.AT_FDCWD, target, unix.MOVE_MOUNT_F_EMPTY_PATH)
			mount = append(mount, time.Since(start))
			unix.Close(fd)
			if err != nil {
				b.Fatal(err)
			}
			if err := unix.Unmount(target, unix.MNT_DETACH); err != nil {
				b.Fatal(err)
			}
		}
		// moss: materialise the transaction as a hardlink farm of the store.
		var farm []time.Duration
		for i := range 3 {
			start := time.Now()
			if err := linkFarm(src, filepath.Join(dir, fmt.Sprintf("farm-%d", i))); err != nil {
				b.Fatal(err)
			}
			farm = append(farm, time.Since(start))
		}
		p50, p99, farm50 := percentile(mount, 0.5), percentile(mount, 0.99), percentile(farm, 0.5)
		b.ReportMetric(p50, "mount-p50-ms")
		b.ReportMetric(p99, "mount-p99-ms")
		b.ReportMetric(farm50, "farm-p50-ms")
		b.ReportMetric(p99/farm50, "mount-p99/farm")
		for i := range 3 {
			os.RemoveAll(filepath.Join(dir, fmt.Sprintf("farm-%d", i)))
		}
	}
}

func BenchmarkSwitch(b *testing.B) {
	testenv.RequireMountNS(b)
	dir := b.TempDir()
	images, objects := benchImages(b, dir)
	// The target sits on its own tmpfs, as /usr sits on the root file system.
	base := filepath.Join(dir, "base")
	os.Mkdir(base, 0o755)
	if err := unix.Mount("bench", base, "tmpfs", 0, ""); err != nil {
		b.Fatal(err)
	}
	defer unix.Unmount(base, unix.MNT_DETACH)
	target := filepath.Join(base, "usr")
	os.Mkdir(target, 0o755)
	fd, _, err := overlay.Mount(overlay.Options{Image: images[0], ObjectsDir: objects})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := mounttuck.Switch(fd, target); err != nil {
		b.Fatal(err)
	}
	unix.Close(fd)

	// moss's way: two hardlink farms of the tree, exchanged atomically.
	src := filepath.Join(dir, "src")
	os.Mkdir(src, 0o755)
	if _, err := gentree.Materialize(src, gentree.FromEnv()); err != nil {
		b.Fatal(err)
	}
	farmA, farmB := filepath.Join(dir, "usr-farm"), filepath.Join(dir, "staging-farm")
	for _, f := range []string{farmA, farmB} {
		if err := linkFarm(src, f); err != nil {
			b.Fatal(err)
		}
	}

	n := benchSamples()
	b.ResetTimer()
	for range b.N {
		var total, tuck, rename []time.Duration
		for i := range n {
			start := time.Now()
			fd, _, err := overlay.Mount(overlay.Options{Image: images[(i+1)%2], ObjectsDir: objects})
			if err != nil {
				b.Fatal(err)
			}
			mid := time.Now()
			_, err = mounttuck.Switch(fd, target)
			end := time.Now()
			unix.Close(fd)
			if err != nil {
				b.Fatal(err)
			}
			total = append(total, end.Sub(start))
			tuck = append(tuck, end.Sub(mid))

			start = time.Now()
			err = unix.Renameat2(unix.AT_FDCWD, farmB, unix.AT_FDCWD, farmA, unix.RENAME_EXCHANGE)
			rename = append(rename, time.Since(start))
			if err != nil {
				b.Fatal(err)
			}
		}
		p99, r99 := percentile(total, 0.99), percentile(rename, 0.99)
		b.ReportMetric(percentile(total, 0.5), "switch-p50-ms")
		b.ReportMetric(p99, "switch-p99-ms")
		b.ReportMetric(percentile(tuck, 0.5), "tuck-p50-ms")
		b.ReportMetric(percentile(tuck, 0.99), "tuck-p99-ms")
		b.ReportMetric(percentile(rename, 0.5), "rename-p50-ms")
		b.ReportMetric(r99, "rename-p99-ms")
		b.ReportMetric(p99/r99, "switch-p99/rename-p99")
	}
	b.StopTimer()
	if m, _ := mounttuck.MountsAt(target); len(m) != 1 {
		b.Fatalf("%d mounts at the target after the benchmark", len(m))
	}
}

// linkFarm recreates the tree at src under dst with directories copied and
// every other entry hardlinked (cp -al), as moss builds a transaction's /usr
// from its store.
func linkFarm(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		out := filepath.Join(dst, rel)
		if d.IsDir() {
			info, err := d.Info()
			if err != nil {
				return err
			}
			return os.Mkdir(out, info.Mode().Perm())
		}
		return os.Link(p, out)
	})
}
