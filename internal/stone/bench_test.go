package stone

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/mossfs/mossfs/cas"
)

// BenchmarkImportStone imports bash-completion (474 contents, 872 KB) into
// a fresh store per iteration. The baseline, measured in the same run, only
// decompresses its Content payload into io.Discard; x-decompress is how many
// times longer the whole import takes.
func BenchmarkImportStone(b *testing.B) {
	path := filepath.Join(stonesDir(b), "bash-completion-2.11-1-1-x86_64.stone")
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	p, err := Open(f, st.Size(), path)
	if err != nil {
		b.Fatal(err)
	}
	h := p.Content()
	decompress := func() {
		dec, err := zstd.NewReader(io.NewSectionReader(f, h.BodyOffset(), int64(h.StoredSize)), zstd.WithDecoderMaxWindow(maxWindow))
		if err != nil {
			b.Fatal(err)
		}
		defer dec.Close()
		if n, err := io.Copy(io.Discard, dec); err != nil || uint64(n) != h.PlainSize {
			b.Fatalf("baseline decompressed %d bytes: %v", n, err)
		}
	}
	const baseRuns = 20
	start := time.Now()
	for range baseRuns {
		decompress()
	}
	base := time.Since(start) / baseRuns

	report := func(b *testing.B) {
		per := b.Elapsed() / time.Duration(b.N)
		b.ReportMetric(float64(per)/float64(base), "x-decompress")
		b.ReportMetric(float64(base.Microseconds()), "baseline-µs")
		b.ReportMetric(float64(h.PlainSize)/per.Seconds()/1e6, "MB/s")
	}
	// Digests only: what the importer itself costs.
	b.Run("digests", func(b *testing.B) {
		for b.Loop() {
			if _, _, err := Import(context.Background(), path, nil, nil); err != nil {
				b.Fatal(err)
			}
		}
		report(b)
	})
	// Into a fresh cas.Store each time: 474 new objects.
	b.Run("store", func(b *testing.B) {
		dir := b.TempDir()
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			store, err := cas.Create(filepath.Join(dir, fmt.Sprint(i)))
			if err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			if _, _, err := Import(context.Background(), path, store, nil); err != nil {
				b.Fatal(err)
			}
		}
		report(b)
	})
}
