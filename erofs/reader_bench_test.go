package erofs

import (
	"bytes"
	"encoding/hex"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"testing/fstest"
	"time"

	goerofs "github.com/erofs/go-erofs"
	"github.com/mossfs/mossfs/internal/gentree"
	"github.com/mossfs/mossfs/tree"
)

// rdGenImage builds the image of a generated tree and writes it to a file
// (benchmarks read through *os.File, as tools and FUSE do).
func rdGenImage(tb testing.TB, spec gentree.Spec) (string, *tree.Node) {
	tb.Helper()
	root := gentree.Tree(spec)
	img, err := BuildImage(root, DefaultWriteOptions())
	if err != nil {
		tb.Fatal(err)
	}
	p := filepath.Join(tb.TempDir(), "gen.cfs")
	if err := os.WriteFile(p, img, 0o644); err != nil {
		tb.Fatal(err)
	}
	return p, root
}

func rdOpenFile(tb testing.TB, p string) (*Image, *os.File) {
	tb.Helper()
	f, err := os.Open(p)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { f.Close() })
	img, err := Open(f)
	if err != nil {
		tb.Fatal(err)
	}
	return img, f
}

// goErofsWalk is the baseline: go-erofs reading every entry's metadata
// (Lstat with xattrs) through a walk of the same image.
func goErofsWalk(tb testing.TB, f *os.File) int {
	ofs, err := goerofs.Open(f)
	if err != nil {
		tb.Fatal(err)
	}
	n := 0
	err = fs.WalkDir(ofs, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if _, err := d.Info(); err != nil {
			return err
		}
		n++
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	return n
}

// BenchmarkOpenTree reads the whole source tree of a generated image
// (gentree.Small; the 65k-entry gentree.Full with MOSSFS_BENCH_FULL=1) and
// reports the time against go-erofs walking the same image's metadata.
func BenchmarkOpenTree(b *testing.B) {
	spec := gentree.FromEnv()
	p, src := rdGenImage(b, spec)
	_, f := rdOpenFile(b, p)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		img, err := Open(f)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := img.Tree(); err != nil {
			b.Fatal(err)
		}
	}
	mine := time.Since(start)
	b.StopTimer()
	start = time.Now()
	for range b.N {
		goErofsWalk(b, f)
	}
	base := time.Since(start)
	b.ReportMetric(float64(mine.Nanoseconds())/float64(b.N)/float64(spec.Entries()+1), "ns/entry")
	b.ReportMetric(float64(base.Nanoseconds())/float64(b.N)/float64(spec.Entries()+1), "go-erofs-ns/entry")
	b.ReportMetric(float64(mine)/float64(base), "x-go-erofs")
	_ = src
}

// BenchmarkLookup stats random paths of a generated image through the
// fs.FS view, against go-erofs's Lstat of the same paths.
func BenchmarkLookup(b *testing.B) {
	spec := gentree.FromEnv()
	p, src := rdGenImage(b, spec)
	img, f := rdOpenFile(b, p)
	var paths []string
	_ = src.Walk(func(n *tree.Node) error {
		if n.Parent != nil {
			paths = append(paths, n.Path()[1:])
		}
		return nil
	})
	r := rand.New(rand.NewPCG(1, 2))
	r.Shuffle(len(paths), func(i, j int) { paths[i], paths[j] = paths[j], paths[i] })
	ofs, err := goerofs.Open(f)
	if err != nil {
		b.Fatal(err)
	}
	lfs := ofs.(fs.ReadLinkFS)
	b.ResetTimer()
	start := time.Now()
	for i := range b.N {
		if _, err := img.Lstat(paths[i%len(paths)]); err != nil {
			b.Fatal(err)
		}
	}
	mine := time.Since(start)
	b.StopTimer()
	start = time.Now()
	for i := range b.N {
		if _, err := lfs.Lstat(paths[i%len(paths)]); err != nil {
			b.Fatal(err)
		}
	}
	base := time.Since(start)
	b.ReportMetric(float64(base.Nanoseconds())/float64(b.N), "go-erofs-ns/op")
	b.ReportMetric(float64(mine)/float64(base), "x-go-erofs")
}

// TestGenTreeImage reads a generated tree's image back: Tree equals the
// source, go-erofs agrees inode by inode, and the fs.FS view passes fstest
// with an object directory serving the external files' content.
func TestGenTreeImage(t *testing.T) {
	spec := gentree.Tiny
	files := map[string]gentree.File{}
	root := gentree.TreeWithDigests(spec, func(f gentree.File) [32]byte {
		d := gentree.FakeDigest(f)
		files[hex.EncodeToString(d[:])] = f
		return d
	})
	// The symlinks point into /usr: dangling inside the image, and fstest
	// opens every entry. Symlinks are covered by TestFSSymlinks.
	rdDropSymlinks(root)
	image, err := BuildImage(root, DefaultWriteOptions())
	if err != nil {
		t.Fatal(err)
	}
	objects := fstest.MapFS{}
	var expect []string
	_ = root.Walk(func(n *tree.Node) error {
		if n.Parent != nil {
			expect = append(expect, n.Path()[1:])
		}
		if n.LinkTo == nil && n.Payload != "" {
			objects[n.Payload] = &fstest.MapFile{Data: gentree.Content(files[hex.EncodeToString(n.Digest)])}
		}
		return nil
	})
	if len(objects) == 0 {
		t.Fatal("generated tree has no external files")
	}
	img, err := OpenWithObjects(bytes.NewReader(image), objects)
	if err != nil {
		t.Fatal(err)
	}
	got := rdTree(t, img)
	want := gentree.TreeWithDigests(spec, nil)
	rdDropSymlinks(want)
	rdNormalize(want, img.Version())
	if err := tree.Equal(want, got); err != nil {
		t.Errorf("Tree differs from the generated tree: %v", err)
	}
	rdCompareGoErofs(t, "gentree.Tiny", image)
	if err := fstest.TestFS(img, expect...); err != nil {
		t.Error(err)
	}
}

func rdDropSymlinks(root *tree.Node) {
	_ = root.Walk(func(n *tree.Node) error {
		kept := n.Children[:0]
		for _, c := range n.Children {
			if c.Type() != tree.TypeLink {
				kept = append(kept, c)
			}
		}
		n.Children = kept
		return nil
	})
}
