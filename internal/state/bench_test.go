package state_test

import (
	"context"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/mossfs/mossfs/cas"
	"github.com/mossfs/mossfs/dirimport"
	"github.com/mossfs/mossfs/fsverity"
	"github.com/mossfs/mossfs/internal/gentree"
	"github.com/mossfs/mossfs/internal/state"
	"github.com/mossfs/mossfs/internal/stone"
	mtree "github.com/mossfs/mossfs/tree"
)

// The benchmarks measure mossfs against what moss does today, on the same
// generated tree (gentree.Full with MOSSFS_BENCH_FULL=1: 65k entries,
// ~800 MB; gentree.Small otherwise) and in the same run, and report the
// ratio with b.ReportMetric:
//
//	BenchmarkImport   import into an empty store   vs cp -a + sync      (goal ≤ 1.5×)
//	BenchmarkCompose  compose from the store       vs cp -al farm       (goal ≥ 10× faster)
//	BenchmarkRemove   remove a transaction, no gc  vs rm -rf of a farm  (goal ≥ 50× faster)
//	BenchmarkGC       gc                           vs walk+unlink of the store (moss prune)

var (
	benchOnce sync.Once
	benchDir  string // holds tree/, the materialized tree
	benchErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if benchDir != "" {
		os.RemoveAll(benchDir)
	}
	os.Exit(code)
}

// benchTree materializes the generated tree once per test binary.
func benchTree(b *testing.B) string {
	b.Helper()
	benchOnce.Do(func() {
		benchDir, benchErr = os.MkdirTemp("", "mossfs-state-bench-")
		if benchErr != nil {
			return
		}
		dir := filepath.Join(benchDir, "tree")
		if benchErr = os.Mkdir(dir, 0o755); benchErr == nil {
			_, benchErr = gentree.Materialize(dir, gentree.FromEnv())
		}
	})
	if benchErr != nil {
		b.Fatal(benchErr)
	}
	return filepath.Join(benchDir, "tree")
}

func sh(b *testing.B, name string, args ...string) {
	b.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		b.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
}

func timed(f func()) time.Duration {
	start := time.Now()
	f()
	return time.Since(start)
}

// newBenchState creates a state root in dir and, if withTree, a first
// transaction holding the tree at its root.
func newBenchState(b *testing.B, dir, tree string, withTree bool) *state.State {
	b.Helper()
	s, err := state.Create(dir)
	if err != nil {
		b.Fatal(err)
	}
	if withTree {
		importTree(b, s, tree)
	}
	return s
}

func importTree(b *testing.B, s *state.State, tree string) *state.Transaction {
	b.Helper()
	lk, err := s.Lock()
	if err != nil {
		b.Fatal(err)
	}
	defer lk.Unlock()
	im, err := s.NewImporter(stone.Format{})
	if err != nil {
		b.Fatal(err)
	}
	defer im.Close()
	f, err := im.Tree(context.Background(), tree, "/")
	if err != nil {
		b.Fatal(err)
	}
	res, err := s.Compose(state.ComposeOptions{Add: []state.Fragment{f}})
	if err != nil {
		b.Fatal(err)
	}
	return res.Tx
}

// report gives both sides' times per operation. The benchmarks below time
// each side themselves and leave the benchmark timer running over whole
// iterations (set-up and baseline included): otherwise a fast operation
// such as remove (about a millisecond) would make the framework run
// hundreds of iterations, each with seconds of set-up. ns/op is therefore
// not a figure of ours; the -ms/op metrics and ratios are.
func report(b *testing.B, ours, base time.Duration, oursName, baseName string) {
	n := float64(b.N)
	b.ReportMetric(float64(ours)/1e6/n, oursName+"-ms/op")
	b.ReportMetric(float64(base)/1e6/n, baseName+"-ms/op")
}

// BenchmarkImport: import a tree into an empty store (hash, store every
// file, one syncfs) vs cp -a of the tree followed by sync.
func BenchmarkImport(b *testing.B) {
	tree := benchTree(b)
	work := b.TempDir()
	var ours, base time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		sh(b, "sync")
		root := filepath.Join(work, "moss")
		s := newBenchState(b, root, tree, false)
		ours += timed(func() {
			lk, _ := s.Lock()
			im, err := s.NewImporter(stone.Format{})
			if err != nil {
				b.Fatal(err)
			}
			if _, err := im.Tree(context.Background(), tree, "/"); err != nil {
				b.Fatal(err)
			}
			if err := im.Sync(); err != nil {
				b.Fatal(err)
			}
			im.Close()
			lk.Unlock()
		})
		cp := filepath.Join(work, "cp")
		sh(b, "sync")
		base += timed(func() {
			sh(b, "cp", "-a", tree, cp)
			sh(b, "sync")
		})
		os.RemoveAll(root)
		os.RemoveAll(cp)
	}
	b.StopTimer()
	report(b, ours, base, "import", "cp-a+sync")
	b.ReportMetric(ours.Seconds()/base.Seconds(), "import/cp-a")
}

// BenchmarkCompose: compose a new transaction of the whole tree from the
// store (read the base's fragment, merge, build the EROFS image, digest it,
// write it, one syncfs, publish) vs the hardlink farm moss blits for a new
// state (cp -al of the tree).
func BenchmarkCompose(b *testing.B) {
	tree := benchTree(b)
	work := b.TempDir()
	s := newBenchState(b, filepath.Join(work, "moss"), tree, true)
	entries := 0
	var ours, base, baseSync time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		sh(b, "sync")
		ours += timed(func() {
			res, err := s.Compose(state.ComposeOptions{From: 1, Force: true})
			if err != nil {
				b.Fatal(err)
			}
			entries = res.Tx.Counts.Entries
		})
		farm := filepath.Join(work, "farm")
		base += timed(func() { sh(b, "cp", "-al", tree, farm) })
		baseSync += timed(func() { sh(b, "sync") })
		os.RemoveAll(farm)
	}
	b.StopTimer()
	report(b, ours, base, "compose", "cp-al")
	// moss does not sync its farm; a durable one would also need this.
	b.ReportMetric(float64(base+baseSync)/1e6/float64(b.N), "cp-al+sync-ms/op")
	b.ReportMetric(base.Seconds()/ours.Seconds(), "x-faster-than-cp-al")
	b.ReportMetric(float64(entries), "entries")
}

// BenchmarkRemove: remove a transaction without gc (unpublish its metadata,
// delete its fragments) vs rm -rf of a hardlink farm of the tree.
func BenchmarkRemove(b *testing.B) {
	tree := benchTree(b)
	work := b.TempDir()
	s := newBenchState(b, filepath.Join(work, "moss"), tree, true)
	var ours, base time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		res, err := s.Compose(state.ComposeOptions{From: 1, Force: true})
		if err != nil {
			b.Fatal(err)
		}
		farm := filepath.Join(work, "farm")
		sh(b, "cp", "-al", tree, farm)
		sh(b, "sync")
		ours += timed(func() {
			if err := s.Remove([]uint64{res.Tx.ID}, false); err != nil {
				b.Fatal(err)
			}
		})
		base += timed(func() { sh(b, "rm", "-rf", farm) })
	}
	b.StopTimer()
	report(b, ours, base, "remove", "rm-rf")
	b.ReportMetric(base.Seconds()/ours.Seconds(), "x-faster-than-rm-rf")
}

// BenchmarkGC: gc of a store with three transactions, one of them removed
// (its image and a tenth of the objects are garbage) vs what moss's prune
// does: walk the whole store and unlink every file no kept state references
// (run on a copy of the objects, given the live set; moss would also rm -rf
// archived trees, not counted here).
func BenchmarkGC(b *testing.B) {
	tree := benchTree(b)
	work := b.TempDir()
	s := newBenchState(b, filepath.Join(work, "moss"), tree, true)
	var ours, base time.Duration
	removed, pruned := 0, 0
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		// Garbage: a transaction with extra objects, removed.
		extra := filepath.Join(work, "extra")
		spec := gentree.FromEnv()
		spec.Seed, spec.Files, spec.Dirs, spec.Symlinks, spec.TotalBytes = uint64(100+i), spec.Files/10, spec.Dirs/10, 0, spec.TotalBytes/10
		os.Mkdir(extra, 0o755)
		if _, err := gentree.Materialize(extra, spec); err != nil {
			b.Fatal(err)
		}
		tx := importTree(b, s, extra)
		if _, err := s.Compose(state.ComposeOptions{From: 1, Force: true}); err != nil {
			b.Fatal(err)
		}
		if err := s.Remove([]uint64{tx.ID}, false); err != nil {
			b.Fatal(err)
		}
		os.RemoveAll(extra)
		// The baseline's store: a hardlink copy, and the live set.
		live := map[string]bool{}
		txs, err := s.List()
		if err != nil {
			b.Fatal(err)
		}
		for _, t := range txs {
			root, err := s.Tree(t)
			if err != nil {
				b.Fatal(err)
			}
			root.Walk(func(n *mtree.Node) error {
				if n.Payload != "" {
					live[n.Payload] = true
				}
				// Importers keep inline contents as objects too (for
				// the sha256 index); gc counts them live.
				if len(n.Content) > 0 && len(n.Content) <= dirimport.InlineMax {
					live[cas.Payload(fsverity.Sum(n.Content))] = true
				}
				return nil
			})
		}
		store := filepath.Join(work, "prune-store")
		sh(b, "cp", "-a", s.Store().ObjectsDir(), store)
		sh(b, "sync")
		pruned = 0
		base += timed(func() {
			filepath.WalkDir(store, func(p string, d fs.DirEntry, err error) error {
				if err != nil || !d.Type().IsRegular() {
					return nil
				}
				rel, _ := filepath.Rel(store, p)
				if !live[rel] {
					if os.Remove(p) == nil {
						pruned++
					}
				}
				return nil
			})
		})
		ours += timed(func() {
			res, err := s.GC(state.GCOptions{})
			if err != nil {
				b.Fatal(err)
			}
			removed = res.ObjectsRemoved
		})
		os.RemoveAll(store)
	}
	b.StopTimer()
	if pruned != removed {
		b.Fatalf("gc removed %d objects, the prune baseline %d", removed, pruned)
	}
	report(b, ours, base, "gc", "prune-walk")
	b.ReportMetric(ours.Seconds()/base.Seconds(), "gc/prune-walk")
	b.ReportMetric(float64(removed), "objects-removed")
}
