package erofs

import (
	"bytes"
	"runtime"
	"testing"
	"time"

	"github.com/mossfs/mossfs/internal/gentree"
	"github.com/mossfs/mossfs/tree"
	"golang.org/x/sys/unix"
)

// Goals for the 65k-entry gentree.Full tree (the issue's), scaled per entry.
const (
	goalTreeToImage = 60 * time.Millisecond
	goalDumpToImage = 120 * time.Millisecond
	goalEntries     = 65000
)

// benchTree is the generated tree (gentree.Small; gentree.Full, 65k
// entries, with MOSSFS_BENCH_FULL=1) and its number of entries.
func benchTree(b *testing.B) (*tree.Node, int) {
	spec := gentree.FromEnv()
	return gentree.Tree(spec), spec.Entries() + 1
}

// baseline is the floor any writer pays: visit every node of the tree and
// copy every byte of the image once.
func baseline(root *tree.Node, img []byte) time.Duration {
	best := time.Duration(1 << 62)
	for range 3 {
		start := time.Now()
		n := 0
		_ = root.Walk(func(*tree.Node) error { n++; return nil })
		_ = bytes.Clone(img)
		best = min(best, time.Since(start))
	}
	return best
}

// allocated returns the bytes allocated while fn runs (whole process: run
// it alone).
func allocated(fn func()) uint64 {
	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	fn()
	runtime.ReadMemStats(&m1)
	return m1.TotalAlloc - m0.TotalAlloc
}

// cpuTime is the CPU time (user and system) this process has used: on a
// loaded machine it says more than wall time.
func cpuTime() time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func reportImage(b *testing.B, entries int, img []byte, base time.Duration, alloc uint64, goal time.Duration, cpu time.Duration) {
	perOp := b.Elapsed() / time.Duration(b.N)
	b.ReportMetric(float64(cpu.Microseconds())/1000/float64(b.N), "cpu-ms/op")
	b.ReportMetric(float64(perOp.Nanoseconds())/float64(entries), "ns/entry")
	b.ReportMetric(float64(perOp)/float64(base), "x-baseline")
	b.ReportMetric(float64(goal)*float64(entries)/goalEntries/float64(perOp), "x-goal")
	b.ReportMetric(float64(alloc)/float64(len(img)), "alloc/image")
	b.ReportMetric(float64(len(img))/(1<<20), "image-MB")
}

// BenchmarkWriteImage builds the image of an in-memory tree. x-baseline is
// its time over the floor of baseline (measured in the same run);
// x-goal above 1 beats the goal (60 ms for 65k entries); alloc/image is the
// memory the writer allocates, image included, over the image's size;
// cpu-ms/op is the CPU time the process used per image (GC included),
// steadier than wall time on a busy machine.
func BenchmarkWriteImage(b *testing.B) {
	root, entries := benchTree(b)
	img, err := BuildImage(root, DefaultWriteOptions())
	if err != nil {
		b.Fatal(err)
	}
	base := baseline(root, img)
	alloc := allocated(func() { _, _ = BuildImage(root, DefaultWriteOptions()) })
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuTime()
	for b.Loop() {
		if _, err := BuildImage(root, DefaultWriteOptions()); err != nil {
			b.Fatal(err)
		}
	}
	reportImage(b, entries, img, base, alloc, goalTreeToImage, cpuTime()-cpu0)
}

// BenchmarkDumpToImage parses a composefs dump (in memory) and builds its
// image, as mkcomposefs --from-file does. Metrics as BenchmarkWriteImage;
// x-goal is against 120 ms for 65k entries.
func BenchmarkDumpToImage(b *testing.B) {
	root, entries := benchTree(b)
	var dump bytes.Buffer
	if err := WriteDump(&dump, root); err != nil {
		b.Fatal(err)
	}
	img, err := BuildImage(root, DefaultWriteOptions())
	if err != nil {
		b.Fatal(err)
	}
	run := func() []byte {
		r, err := ParseDump(bytes.NewReader(dump.Bytes()), DumpOptions{Name: "bench"})
		if err != nil {
			b.Fatal(err)
		}
		out, err := BuildImage(r, DefaultWriteOptions())
		if err != nil {
			b.Fatal(err)
		}
		return out
	}
	if !bytes.Equal(run(), img) {
		b.Fatal("the dump's image differs from the tree's")
	}
	base := baseline(root, img)
	alloc := allocated(func() { run() })
	b.ReportAllocs()
	b.SetBytes(int64(dump.Len()))
	b.ResetTimer()
	cpu0 := cpuTime()
	for b.Loop() {
		run()
	}
	reportImage(b, entries, img, base, alloc, goalDumpToImage, cpuTime()-cpu0)
}
