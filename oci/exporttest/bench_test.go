package exporttest

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/mossfs/mossfs/internal/gentree"
)

// BenchmarkExport measures, in one run, on the generated tree (the 65k
// entries with MOSSFS_BENCH_FULL=1, gentree.Small otherwise) composed into
// a transaction:
//   - moss-export: "moss-compose export TX oci:DIR" end to end (zstd:chunked);
//   - moss-export-zstd, moss-export-gzip: the same with zstd or gzip layers;
//   - tar-zstd: "tar -c | zstd -3 -T0" of the tree (the baseline; goal ≤ 1.5×);
//   - skopeo-copy: "skopeo copy oci:A oci:B --dest-compress-format zstd" of
//     the tree imported as an uncompressed tar layer.
//
// cpu-s/op is the commands' user+system time (tar and zstd together for
// tar-zstd). The ratios go into the closing note of issue 11.
func BenchmarkExport(b *testing.B) {
	dir := b.TempDir()
	src := filepath.Join(dir, "tree")
	spec := gentree.FromEnv()
	if err := os.MkdirAll(src, 0o755); err != nil {
		b.Fatal(err)
	}
	if _, err := gentree.Materialize(src, spec); err != nil {
		b.Fatal(err)
	}
	bin := benchBinaries(b)
	root := filepath.Join(dir, "moss")
	var cpu time.Duration // user+system time of the commands sh ran
	sh := func(name string, args ...string) {
		b.Helper()
		cmd := exec.Command(name, args...)
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("%s %v: %v\n%s", name, args, err, out)
		}
		cpu += cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	}
	sh(filepath.Join(bin, "moss-compose"), "compose", "-q", "--root", root, "--tree", src)
	// skopeo's source: the tree as an uncompressed tar layer.
	sh(filepath.Join(bin, "moss-compose"), "export", "-q", "--root", root, "--compression", "none", "1", "oci:"+filepath.Join(dir, "plain")+":src")
	cache := filepath.Join(dir, "cache")
	b.Logf("tree: %d entries, %d MB of content", spec.Entries(), spec.TotalBytes>>20)

	out := filepath.Join(dir, "out")
	run := func(b *testing.B, f func()) {
		cpu = 0
		for b.Loop() {
			b.StopTimer()
			os.RemoveAll(out)
			os.RemoveAll(cache)
			b.StartTimer()
			f()
		}
		b.ReportMetric(cpu.Seconds()/float64(b.N), "cpu-s/op")
	}
	b.Run("moss-export", func(b *testing.B) {
		run(b, func() { sh(filepath.Join(bin, "moss-compose"), "export", "-q", "--root", root, "1", "oci:"+out+":x") })
	})
	b.Run("moss-export-zstd", func(b *testing.B) {
		run(b, func() {
			sh(filepath.Join(bin, "moss-compose"), "export", "-q", "--root", root, "--compression", "zstd", "1", "oci:"+out+":x")
		})
	})
	b.Run("moss-export-gzip", func(b *testing.B) {
		run(b, func() {
			sh(filepath.Join(bin, "moss-compose"), "export", "-q", "--root", root, "--compression", "gzip", "1", "oci:"+out+":x")
		})
	})
	b.Run("tar-zstd", func(b *testing.B) {
		run(b, func() { sh("bash", "-c", "tar -C "+src+" -cf - . | zstd -q -3 -T0 -o "+out) })
	})
	b.Run("skopeo-copy", func(b *testing.B) {
		if _, err := exec.LookPath("skopeo"); err != nil {
			b.Skip("skopeo not installed")
		}
		policy := filepath.Join(dir, "policy.json")
		os.WriteFile(policy, []byte(`{"default":[{"type":"insecureAcceptAnything"}]}`), 0o600)
		run(b, func() {
			sh("skopeo", "--policy", policy, "copy", "-q", "--dest-compress-format", "zstd", "oci:"+filepath.Join(dir, "plain")+":src", "oci:"+out+":x")
		})
	})
}
