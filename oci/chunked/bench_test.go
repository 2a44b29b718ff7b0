package chunked

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/mossfs/mossfs/internal/gentree"
	"github.com/mossfs/mossfs/internal/ocitest"
)

// BenchmarkBAfterA pulls layer B (sharing 90% of A's files, the generated
// tree: gentree.Small, or Full with MOSSFS_BENCH_FULL=1) from the loopback
// docker-registry into a store that holds A, partially, and as the baseline
// downloads it whole (GET, zstd decompression, diff_id hash) in the same
// iteration. Bytes are the registry's, from its access log.
func BenchmarkBAfterA(b *testing.B) {
	reg := ocitest.StartRegistry(b)
	spec := gentree.FromEnv()
	la := storageChunked(b, ocitest.GenTar(b, spec, false))
	lb := storageChunked(b, ocitest.GenTar(b, spec, true))
	pushBlob(b, reg, "bench/a", la.blob)
	db := pushBlob(b, reg, "bench/b", lb.blob)
	store := memStore{}
	storeFromTar(b, store, bytes.NewReader(la.tar))
	client := &Registry{Host: reg.Host, Repository: "bench/b", Insecure: true}
	var partialT, wholeT time.Duration
	var partialB, wholeB int64
	dec, _ := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1))
	defer dec.Close()
	b.ResetTimer()
	for range b.N {
		before, _ := reg.BlobBytes(b, "bench/b", db)
		t0 := time.Now()
		l, got := pullLayer(b, client, lb, store)
		partialT += time.Since(t0)
		l.Close()
		if len(got) != len(lb.tar) {
			b.Fatal("rebuilt tar differs")
		}
		after, _ := reg.BlobBytes(b, "bench/b", db)
		partialB += after - before

		t0 = time.Now()
		resp, err := http.Get("http://" + reg.Host + "/v2/bench/b/blobs/" + db)
		if err != nil {
			b.Fatal(err)
		}
		if err := dec.Reset(resp.Body); err != nil {
			b.Fatal(err)
		}
		h := sha256.New()
		if _, err := io.Copy(h, dec); err != nil {
			b.Fatal(err)
		}
		resp.Body.Close()
		if fmt.Sprintf("sha256:%x", h.Sum(nil)) != lb.diffID {
			b.Fatal("whole download: diff_id differs")
		}
		wholeT += time.Since(t0)
		end, _ := reg.BlobBytes(b, "bench/b", db)
		wholeB += end - after
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
