package cas

import (
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mossfs/mossfs/internal/gentree"
)

// benchFiles materializes the generated tree (gentree.Small, or the 800 MB
// Full tree with MOSSFS_BENCH_FULL=1) and lists its regular files.
func benchFiles(b *testing.B) (paths []string, total int64) {
	src := filepath.Join(b.TempDir(), "src")
	os.Mkdir(src, 0o755)
	if _, err := gentree.Materialize(src, gentree.FromEnv()); err != nil {
		b.Fatal(err)
	}
	filepath.WalkDir(src, func(p string, e fs.DirEntry, err error) error {
		if err == nil && e.Type().IsRegular() {
			info, _ := e.Info()
			paths = append(paths, p)
			total += info.Size()
		}
		return nil
	})
	return paths, total
}

// copyFiles is the baseline: what `cp` does, os.Open + io.Copy into a new
// file, for every file.
func copyFiles(dst string, paths []string) error {
	for i, p := range paths {
		in, err := os.Open(p)
		if err != nil {
			return err
		}
		out, err := os.Create(filepath.Join(dst, strconv.Itoa(i)))
		if err != nil {
			in.Close()
			return err
		}
		_, err = io.Copy(out, in)
		in.Close()
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// BenchmarkPut stores every file of the generated tree with PutFile into a
// fresh store (serially and from GOMAXPROCS goroutines, ending with Sync),
// and again into a store that has them all (dedup). x-copy is the time of
// the copy baseline (measured in the same run, no fsync either) divided by
// the time of the variant: above 1 is faster than cp. sync-s/op is the part
// of a fresh-store variant spent in the final Sync (syncfs writing the data
// out), which the baseline does not pay.
func BenchmarkPut(b *testing.B) {
	paths, total := benchFiles(b)
	base := b.TempDir()
	// Baseline, best of 2 (the first also warms the page cache for both).
	var copyTime time.Duration
	for i := range 2 {
		dst := filepath.Join(base, "copy"+strconv.Itoa(i))
		os.Mkdir(dst, 0o755)
		start := time.Now()
		if err := copyFiles(dst, paths); err != nil {
			b.Fatal(err)
		}
		if d := time.Since(start); i == 0 || d < copyTime {
			copyTime = d
		}
		os.RemoveAll(dst)
	}
	b.Logf("%d files, %d bytes; copy baseline %v (%.0f MB/s)", len(paths), total, copyTime, float64(total)/copyTime.Seconds()/1e6)
	ratio := func(b *testing.B) {
		b.ReportMetric(copyTime.Seconds()/(b.Elapsed().Seconds()/float64(b.N)), "x-copy")
		b.ReportMetric(float64(len(paths))*float64(b.N)/b.Elapsed().Seconds(), "files/s")
	}
	var syncTime time.Duration
	putAll := func(b *testing.B, s *Store, workers int) {
		var next atomic.Int64
		var wg sync.WaitGroup
		for range workers {
			wg.Go(func() {
				for {
					i := int(next.Add(1) - 1)
					if i >= len(paths) {
						return
					}
					if _, err := s.PutFile(paths[i]); err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		start := time.Now()
		if err := s.Sync(); err != nil {
			b.Fatal(err)
		}
		syncTime += time.Since(start)
	}
	run := func(name string, workers int) {
		b.Run(name, func(b *testing.B) {
			b.SetBytes(total)
			n := 0
			syncTime = 0
			for b.Loop() {
				b.StopTimer()
				s, err := Create(filepath.Join(base, "store"+strconv.Itoa(n)))
				n++
				if err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				putAll(b, s, workers)
				b.StopTimer()
				os.RemoveAll(s.Root())
				b.StartTimer()
			}
			ratio(b)
			// The one syncfs writes everything out; the copy baseline does not.
			b.ReportMetric(syncTime.Seconds()/float64(b.N), "sync-s/op")
		})
	}
	b.Run("copy-baseline", func(b *testing.B) {
		b.SetBytes(total)
		for b.Loop() {
			b.StopTimer()
			dst := filepath.Join(base, "copy")
			os.Mkdir(dst, 0o755)
			b.StartTimer()
			if err := copyFiles(dst, paths); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			os.RemoveAll(dst)
			b.StartTimer()
		}
		ratio(b)
	})
	run("PutFile-1", 1)
	run("PutFile-parallel", runtime.GOMAXPROCS(0))
	b.Run("PutFile-dedup", func(b *testing.B) {
		s, err := Create(filepath.Join(base, "dedup"))
		if err != nil {
			b.Fatal(err)
		}
		putAll(b, s, runtime.GOMAXPROCS(0))
		b.SetBytes(total)
		b.ResetTimer()
		for b.Loop() {
			putAll(b, s, runtime.GOMAXPROCS(0))
		}
		ratio(b)
	})
}
