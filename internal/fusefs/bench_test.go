package fusefs

import (
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/mossfs/mossfs/internal/gentree"
	"github.com/mossfs/mossfs/internal/testenv"
	"github.com/mossfs/mossfs/tree"
	"golang.org/x/sys/unix"
)

// benchFixture is one gentree transaction (gentree.FromEnv: Small, or the
// 65k-entry Full with MOSSFS_BENCH_FULL=1) mounted through the kernel
// overlay, the baseline of every FUSE figure.
type benchFixture struct {
	image, objects string
	overlay        string
	all            []string // every entry, relative
	files          []string // regular files
	large          []string // the largest files, about a quarter of the bytes
	allBytes       int64
	largeBytes     int64
}

func newBenchFixture(b *testing.B) *benchFixture {
	spec := gentree.FromEnv()
	f := &benchFixture{}
	f.image, f.objects = gentreeImage(b, spec)
	f.overlay = mountOverlay(b, f.image, f.objects)
	list := gentree.List(spec)
	type sized struct {
		path string
		size int64
	}
	var regs []sized
	for _, e := range list {
		f.all = append(f.all, e.Path)
		if e.Mode&tree.TypeMask == tree.TypeReg {
			f.files = append(f.files, e.Path)
			f.allBytes += e.Size
			regs = append(regs, sized{e.Path, e.Size})
		}
	}
	slices.SortFunc(regs, func(a, b sized) int { return int(b.size - a.size) })
	for _, r := range regs {
		if f.largeBytes >= f.allBytes/4 {
			break
		}
		f.large = append(f.large, r.path)
		f.largeBytes += r.size
	}
	return f
}

func dropCaches(b *testing.B) {
	unix.Sync()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0); err != nil {
		b.Fatalf("dropping caches: %v", err)
	}
}

func readFiles(b *testing.B, root string, paths []string, buf []byte) int64 {
	var total int64
	for _, p := range paths {
		fd, err := os.Open(filepath.Join(root, p))
		if err != nil {
			b.Fatal(err)
		}
		for {
			n, err := fd.Read(buf)
			total += int64(n)
			if err == io.EOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
		}
		fd.Close()
	}
	return total
}

func lstatAll(b *testing.B, root string, paths []string) {
	var st unix.Stat_t
	for _, p := range paths {
		if err := unix.Lstat(filepath.Join(root, p), &st); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFUSEvsOverlay measures the FUSE mount against the kernel overlay
// of the same transaction in the same run, cold (caches dropped, a fresh
// daemon) and warm: sequential reads of the largest files, reading every
// file, and lstat of every entry. Each reports both times and
// fuse/overlay throughput (reads; goal ≥ 0.8) or time (lstat; goal ≤ 1.5
// warm) ratios, and whether FUSE passthrough served the reads.
func BenchmarkFUSEvsOverlay(b *testing.B) {
	testenv.RequireMountNS(b)
	f := newBenchFixture(b)
	b.Logf("transaction: %d entries, %d files, %d MB; large files: %d, %d MB",
		len(f.all), len(f.files), f.allBytes>>20, len(f.large), f.largeBytes>>20)
	buf := make([]byte, 1<<20)
	// The daemon runs in its own process, as in use: a server inside the
	// benchmark process would compete with it for the Go scheduler.
	bin := buildMossfs(b, publicDir(b))
	for _, pt := range []struct {
		name     string
		off      bool
		noVerify bool // shows what the digest checks cost (seqread only)
	}{{"passthrough", false, false}, {"daemon-reads", true, false}, {"passthrough-noverify", false, true}} {
		type mounted struct {
			d      *daemon
			target string
		}
		mount := func(b *testing.B) mounted {
			target := b.TempDir()
			args := []string{"--image", f.image, "--objects", f.objects, "--target", target}
			if !pt.off {
				args = append(args, "--passthrough")
			}
			if pt.noVerify {
				args = append(args, "--no-verify")
			}
			return mounted{startDaemon(b, bin, nil, args...), target}
		}
		unmount := func(b *testing.B, m mounted) { m.d.stop(b) }
		passthrough := func(b *testing.B, m mounted) float64 {
			st, err := Query(m.target)
			if err != nil {
				b.Fatal(err)
			}
			return b2f(st.Passthrough)
		}
		for _, cold := range []bool{true, false} {
			temp := "warm"
			if cold {
				temp = "cold"
			}
			// measure times op on the overlay and on a FUSE mount (a new
			// daemon for cold runs, so its caches are cold too).
			measure := func(b *testing.B, op func(root string)) (kernel, fuse time.Duration, s mounted) {
				for i := 0; i < b.N; i++ {
					s = mount(b)
					if cold {
						dropCaches(b)
					} else {
						op(f.overlay)
						op(s.target)
					}
					t0 := time.Now()
					op(f.overlay)
					kernel += time.Since(t0)
					if cold {
						dropCaches(b)
					}
					t0 = time.Now()
					op(s.target)
					fuse += time.Since(t0)
					if i < b.N-1 {
						unmount(b, s)
					}
				}
				return kernel, fuse, s
			}
			b.Run("seqread-large/"+temp+"/"+pt.name, func(b *testing.B) {
				k, fu, s := measure(b, func(root string) { readFiles(b, root, f.large, buf) })
				mb := float64(f.largeBytes) * float64(b.N) / (1 << 20)
				b.ReportMetric(mb/k.Seconds(), "overlay-MB/s")
				b.ReportMetric(mb/fu.Seconds(), "fuse-MB/s")
				b.ReportMetric(k.Seconds()/fu.Seconds(), "fuse/overlay-throughput")
				b.ReportMetric(passthrough(b, s), "passthrough")
				unmount(b, s)
			})
			if pt.noVerify {
				continue
			}
			b.Run("read-all/"+temp+"/"+pt.name, func(b *testing.B) {
				k, fu, s := measure(b, func(root string) { readFiles(b, root, f.files, buf) })
				b.ReportMetric(k.Seconds()/float64(b.N), "overlay-s")
				b.ReportMetric(fu.Seconds()/float64(b.N), "fuse-s")
				b.ReportMetric(k.Seconds()/fu.Seconds(), "fuse/overlay-throughput")
				b.ReportMetric(passthrough(b, s), "passthrough")
				unmount(b, s)
			})
			if pt.off {
				continue // lstat does not read content
			}
			b.Run("lstat-all/"+temp, func(b *testing.B) {
				k, fu, s := measure(b, func(root string) { lstatAll(b, root, f.all) })
				unmount(b, s)
				b.ReportMetric(k.Seconds()/float64(b.N), "overlay-s")
				b.ReportMetric(fu.Seconds()/float64(b.N), "fuse-s")
				b.ReportMetric(fu.Seconds()/k.Seconds(), "fuse/overlay-time")
			})
		}
	}
}

func b2f(v bool) float64 {
	if v {
		return 1
	}
	return 0
}
