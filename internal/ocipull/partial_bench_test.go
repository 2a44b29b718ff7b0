package ocipull

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/mossfs/mossfs/internal/gentree"
	"github.com/mossfs/mossfs/internal/ocitest"
	"github.com/mossfs/mossfs/internal/state"
	"go.podman.io/image/v5/docker/reference"
)

// BenchmarkPullBAfterA times image pull of B (sharing 90% of A's files; the
// generated tree, gentree.Small or Full with MOSSFS_BENCH_FULL=1, in
// zstd:chunked by containers/image) into a store that holds A: partially
// (PartialLayers) against whole (WholeLayers), in the same iteration, each
// into a fresh store where A was pulled first (untimed). Bytes are the
// registry's, from its access log.
func BenchmarkPullBAfterA(b *testing.B) {
	reg := ocitest.StartRegistry(b)
	dir := b.TempDir()
	sys, policy := registryClient(b, reg, dir)
	lay := filepath.Join(dir, "layout")
	spec := gentree.FromEnv()
	for _, name := range []string{"a", "b"} {
		ocitest.WriteLayout(b, lay, name, ocitest.Image{Layers: [][]byte{ocitest.Tar(b, genEntries(spec, name == "b")...)}})
		ref, _ := reference.ParseNormalizedNamed(reg.Name("bench/" + name + ":1"))
		pushZstdChunked(b, lay, name, ref, sys)
	}
	os.RemoveAll(lay)
	pull := func(st *state.State, name string, f LayerFetcher) *PullResult {
		res, err := Pull(context.Background(), st, reg.Ref("bench/"+name+":1"), PullOptions{Sys: sys, PolicyPath: policy, Fetcher: f})
		if err != nil {
			b.Fatalf("pull %s: %v", name, err)
		}
		return res
	}
	served := func() int64 { reg.Settle(b); return reg.Served(b).BlobBytes }
	var partialT, wholeT time.Duration
	var partialB, wholeB int64
	b.ResetTimer()
	for i := range b.N {
		for _, partial := range []bool{true, false} {
			b.StopTimer()
			st, err := state.Create(filepath.Join(dir, fmt.Sprintf("store-%d-%v", i, partial)))
			if err != nil {
				b.Fatal(err)
			}
			pull(st, "a", WholeLayers{})
			before := served()
			var f LayerFetcher = WholeLayers{}
			if partial {
				f = &PartialLayers{State: st, Sys: sys}
			}
			b.StartTimer()
			t0 := time.Now()
			pull(st, "b", f)
			d := time.Since(t0)
			b.StopTimer()
			if partial {
				partialT += d
				partialB += served() - before
			} else {
				wholeT += d
				wholeB += served() - before
			}
			os.RemoveAll(st.Root())
			b.StartTimer()
		}
	}
	b.StopTimer()
	n := float64(b.N)
	b.ReportMetric(float64(partialB)/n, "partial-bytes/op")
	b.ReportMetric(float64(wholeB)/n, "whole-bytes/op")
	b.ReportMetric(float64(partialB)/float64(wholeB), "bytes-ratio")
	b.ReportMetric(float64(partialT.Nanoseconds())/n, "partial-ns/op")
	b.ReportMetric(float64(wholeT.Nanoseconds())/n, "whole-ns/op")
	b.ReportMetric(float64(partialT)/float64(wholeT), "time-ratio")
}
