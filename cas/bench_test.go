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
// the copy baseline divided by the time of the variant (above 1: faster
// than cp); the baseline (no fsync) runs right after every timed iteration,
// so both see the same machine load. sync-s/op is the part of a variant
// spent in its final Sync (syncfs writing the data out), which the baseline
// does not pay.
func BenchmarkPut(b *testing.B) {
	paths, total := benchFiles(b)
	base := b.TempDir()
	copyOnce := func(b *testing.B) time.Duration {
		dst := filepath.Join(base, "copy")
		os.Mkdir(dst, 0o755)
		start := time.Now()
		if err := copyFiles(dst, paths); err != nil {
			b.Fatal(err)
		}
		d := time.Since(start)
		os.RemoveAll(dst)
		return d
	}
	copyOnce(b) // warm the page cache
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
	n := 0
	fresh := func(b *testing.B) *Store {
		s, err := Create(filepath.Join(base, "store"+strconv.Itoa(n)))
		n++
		if err != nil {
			b.Fatal(err)
		}
		return s
	}
	// bench runs op per iteration (timed), with setup and cleanup untimed,
	// and a copy baseline pass after each iteration.
	bench := func(name string, setup func(b *testing.B) *Store, op func(b *testing.B, s *Store), cleanup func(s *Store)) {
		b.Run(name, func(b *testing.B) {
			b.SetBytes(total)
			syncTime = 0
			var copyTime time.Duration
			for b.Loop() {
				b.StopTimer()
				s := setup(b)
				b.StartTimer()
				op(b, s)
				b.StopTimer()
				cleanup(s)
				copyTime += copyOnce(b)
				b.StartTimer()
			}
			b.ReportMetric(copyTime.Seconds()/b.Elapsed().Seconds(), "x-copy")
			b.ReportMetric(float64(len(paths))*float64(b.N)/b.Elapsed().Seconds(), "files/s")
			b.ReportMetric(syncTime.Seconds()/float64(b.N), "sync-s/op")
		})
	}
	removeStore := func(s *Store) {
		if s != nil {
			os.RemoveAll(s.Root())
		}
	}
	bench("copy-baseline", func(*testing.B) *Store { return nil }, func(b *testing.B, _ *Store) { copyOnce(b) }, removeStore)
	bench("PutFile-1", fresh, func(b *testing.B, s *Store) { putAll(b, s, 1) }, removeStore)
	bench("PutFile-parallel", fresh, func(b *testing.B, s *Store) { putAll(b, s, runtime.GOMAXPROCS(0)) }, removeStore)
	dedup := fresh(b)
	putAll(b, dedup, runtime.GOMAXPROCS(0))
	bench("PutFile-dedup", func(*testing.B) *Store { return dedup }, func(b *testing.B, s *Store) { putAll(b, s, runtime.GOMAXPROCS(0)) }, func(*Store) {})
}
