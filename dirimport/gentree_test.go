package dirimport

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/mossfs/mossfs/cas"
	"github.com/mossfs/mossfs/fsverity"
	"github.com/mossfs/mossfs/internal/gentree"
	"github.com/mossfs/mossfs/tree"
)

// TestGentree imports a materialized generated tree and compares it with
// the generator's own in-memory description (mtimes dropped: gentree does
// not set them on symlinks or the root; small files made inline).
func TestGentree(t *testing.T) {
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil { // the generator's root mode
		t.Fatal(err)
	}
	if _, err := gentree.Materialize(dir, gentree.Tiny); err != nil {
		t.Fatal(err)
	}
	got, err := Import(context.Background(), dir, Options{UseEpoch: true, SkipXattrs: true})
	if err != nil {
		t.Fatal(err)
	}
	want := gentree.TreeWithDigests(gentree.Tiny, func(f gentree.File) [32]byte { return fsverity.Sum(gentree.Content(f)) })
	uid, gid := uint32(os.Geteuid()), uint32(os.Getegid())
	_ = want.Walk(func(n *tree.Node) error {
		n.Mtime = tree.Timespec{}
		n.UID, n.GID = uid, gid
		return nil
	})
	// Inline files: the generator describes every file as external.
	list := gentree.List(gentree.Tiny)
	for _, f := range list {
		if f.Mode&tree.TypeMask == tree.TypeReg && f.Size > 0 && f.Size <= InlineMax {
			n := want.Lookup(f.Path)
			n.Content, n.Payload, n.Digest = gentree.Content(f), "", nil
		}
	}
	if err := tree.Equal(got, want); err != nil {
		t.Fatal(err)
	}
}

func materialized(b *testing.B) (string, gentree.Spec) {
	spec := gentree.FromEnv()
	dir := filepath.Join(b.TempDir(), "src")
	if err := os.Mkdir(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	if _, err := gentree.Materialize(dir, spec); err != nil {
		b.Fatal(err)
	}
	return dir, spec
}

// readAll is the baseline of the digest benchmark: read every file once,
// sequentially, as any tool that looks at the content must.
func readAll(b *testing.B, dir string) {
	buf := make([]byte, 1<<20)
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.CopyBuffer(io.Discard, f, buf)
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
}

// BenchmarkImportDir imports a generated tree (gentree.Small, or Full with
// MOSSFS_BENCH_FULL=1). "digests" computes digests only, against reading
// every file once (x-read); "store" fills a fresh cas.Store, against
// `cp -a` of the tree (x-cp), both baselines measured in the same run.
func BenchmarkImportDir(b *testing.B) {
	dir, spec := materialized(b)
	b.Run("digests", func(b *testing.B) {
		start := time.Now()
		readAll(b, dir)
		base := time.Since(start)
		b.ResetTimer()
		for b.Loop() {
			if _, err := Import(context.Background(), dir, Options{}); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(b.Elapsed().Seconds()/float64(b.N)/base.Seconds(), "x-read")
		b.ReportMetric(float64(spec.Entries())*float64(b.N)/b.Elapsed().Seconds(), "entries/s")
	})
	b.Run("store", func(b *testing.B) {
		tmp := b.TempDir()
		start := time.Now()
		if out, err := exec.Command("cp", "-a", dir, filepath.Join(tmp, "cp")).CombinedOutput(); err != nil {
			b.Fatalf("cp -a: %v: %s", err, out)
		}
		base := time.Since(start)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			store, err := cas.Create(filepath.Join(tmp, fmt.Sprint("store", i)))
			if err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			if _, err := Import(context.Background(), dir, Options{Sink: store}); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(b.Elapsed().Seconds()/float64(b.N)/base.Seconds(), "x-cp")
		b.ReportMetric(float64(spec.Entries())*float64(b.N)/b.Elapsed().Seconds(), "entries/s")
	})
}
