package adopt

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/mossfs/mossfs/internal/gentree"
	"github.com/mossfs/mossfs/internal/state"
	"github.com/mossfs/mossfs/internal/stone"
	"github.com/mossfs/mossfs/tree"
	"github.com/zeebo/xxh3"
)

// benchPackages is how many packages the generated tree is split into.
const benchPackages = 16

var (
	benchOnce sync.Once
	benchDir  string
	benchErr  error
)

// benchInstall lays the generated tree (gentree.FromEnv: 65k entries with
// MOSSFS_BENCH_FULL=1) out once per test binary, three ways: a moss
// installation with one state selecting its benchPackages packages
// (assets, databases by sqlite3), the materialized tree (what cp -al
// links, standing in for moss's hardlink blit), and the same packages as
// .stone files.
func benchInstall(b *testing.B) string {
	b.Helper()
	benchOnce.Do(func() {
		benchDir, benchErr = os.MkdirTemp("", "mossfs-adopt-bench-")
		if benchErr != nil {
			return
		}
		spec := gentree.FromEnv()
		files := gentree.List(spec)
		var pkgs []tPkg
		per := (len(files) + benchPackages - 1) / benchPackages
		for i := 0; i < len(files); i += per {
			p := genPkg(fmt.Sprintf("bench-%02d", i/per))
			for _, f := range files[i:min(i+per, len(files))] {
				r := tRow{path: f.Path, mode: f.Mode & 0o7777}
				switch f.Mode & tree.TypeMask {
				case tree.TypeDir:
					r.typ = "directory"
				case tree.TypeLink:
					r.typ, r.target = "symlink", f.Target
				default:
					r.typ, r.data = "regular", gentree.Content(f)
				}
				p.rows = append(p.rows, r)
			}
			pkgs = append(pkgs, p)
		}
		inst := &tInstall{pkgs: pkgs, states: [][]string{nil}}
		for _, p := range pkgs {
			inst.states[0] = append(inst.states[0], p.id)
		}
		inst.write(b, filepath.Join(benchDir, "moss"))
		if benchErr = os.Mkdir(filepath.Join(benchDir, "tree"), 0o755); benchErr != nil {
			return
		}
		if _, benchErr = gentree.Materialize(filepath.Join(benchDir, "tree"), spec); benchErr != nil {
			return
		}
		if benchErr = os.Mkdir(filepath.Join(benchDir, "stones"), 0o755); benchErr != nil {
			return
		}
		for _, p := range pkgs {
			if benchErr = os.WriteFile(filepath.Join(benchDir, "stones", p.name+".stone"), writeStone(b, p), 0o644); benchErr != nil {
				return
			}
		}
	})
	if benchErr != nil {
		b.Fatal(benchErr)
	}
	return benchDir
}

// writeStone encodes a package as a .stone (format version 1, as
// ../shared/reference/stone-format.md describes it): Meta, Layout, Index
// and Content payloads, zstd-compressed, with XXH3-64 checksums.
func writeStone(b testing.TB, p tPkg) []byte {
	var meta, layout, index, content bytes.Buffer
	str := func(tag uint16, s string) {
		binary.Write(&meta, binary.BigEndian, uint32(len(s)+1))
		binary.Write(&meta, binary.BigEndian, tag)
		meta.Write([]byte{9, 0})
		meta.WriteString(s + "\x00")
	}
	u64 := func(tag uint16, v uint64) {
		binary.Write(&meta, binary.BigEndian, uint32(8))
		binary.Write(&meta, binary.BigEndian, tag)
		meta.Write([]byte{8, 0})
		binary.Write(&meta, binary.BigEndian, v)
	}
	str(1, p.name)
	str(2, "x86_64")
	str(3, p.version)
	str(4, "summary")
	str(5, "description")
	str(6, "https://example.org")
	str(7, p.name)
	u64(11, p.release)
	u64(13, p.build)
	nMeta := 9
	seen := map[[16]byte]bool{}
	nIndex := 0
	for _, r := range p.rows {
		var src []byte
		ft := map[string]byte{"regular": 1, "symlink": 2, "directory": 3}[r.typ]
		switch r.typ {
		case "regular":
			x := xxh(r.data)
			src = x[:]
			if !seen[x] && len(r.data) > 0 {
				seen[x] = true
				start := uint64(content.Len())
				content.Write(r.data)
				binary.Write(&index, binary.BigEndian, start)
				binary.Write(&index, binary.BigEndian, uint64(content.Len()))
				index.Write(x[:])
				nIndex++
			}
		case "symlink":
			src = []byte(r.target)
		}
		binary.Write(&layout, binary.BigEndian, []uint32{r.uid, r.gid, typeBits[r.typ] | r.mode, 0})
		binary.Write(&layout, binary.BigEndian, []uint16{uint16(len(src)), uint16(len(r.path))})
		layout.WriteByte(ft)
		layout.Write(make([]byte, 11))
		layout.Write(src)
		layout.WriteString(r.path)
	}
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		b.Fatal(err)
	}
	defer enc.Close()
	var out bytes.Buffer
	out.Write([]byte{0, 'm', 'o', 's', 0, 4, 0, 0, 1, 0, 0, 2, 0, 0, 3, 0, 0, 4, 0, 0, 5, 0, 0, 6, 0, 0, 7, 1, 0, 0, 0, 1})
	for _, pl := range []struct {
		kind byte
		n    int
		body []byte
	}{{1, nMeta, meta.Bytes()}, {3, len(p.rows), layout.Bytes()}, {4, nIndex, index.Bytes()}, {2, 0, content.Bytes()}} {
		stored := enc.EncodeAll(pl.body, nil)
		binary.Write(&out, binary.BigEndian, []uint64{uint64(len(stored)), uint64(len(pl.body)), xxh3.Hash(stored)})
		binary.Write(&out, binary.BigEndian, uint32(pl.n))
		binary.Write(&out, binary.BigEndian, uint16(1))
		out.Write([]byte{pl.kind, 2})
		out.Write(stored)
	}
	return out.Bytes()
}

func run(b *testing.B, name string, args ...string) {
	b.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		b.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
}

// warm reads every file under dir, so that each side starts with its
// input in the page cache (the installation, the tree and the stones are
// written one after the other at set-up, and the oldest may have been
// evicted meanwhile).
func warm(b *testing.B, dir string) {
	b.Helper()
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.Copy(io.Discard, f)
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
}

func timed(f func()) time.Duration {
	start := time.Now()
	f()
	return time.Since(start)
}

// BenchmarkAdopt: time to the first image of a moss state from its
// installation (databases, blit rules, every content copied from
// assets/v2 into an empty store, or reflinked where the file system
// can; the image; one syncfs) against two baselines measured in the same
// run: cp -al of the tree (standing in for moss's own hardlink blit of the
// state) and re-importing the same packages from .stone files into an
// empty store and composing them. Each side runs after a sync, with its
// input read once beforehand (warm page cache); the
// benchmark timer runs over whole iterations, so the -ms/op metrics and
// ratios are the figures, not ns/op.
func BenchmarkAdopt(b *testing.B) {
	dir := benchInstall(b)
	mossRoot, treeDir := filepath.Join(dir, "moss"), filepath.Join(dir, "tree")
	stones, _ := filepath.Glob(filepath.Join(dir, "stones", "*.stone"))
	work := b.TempDir()
	var ours, cpal, fromStones time.Duration
	var entries int
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		warm(b, filepath.Join(mossRoot, ".moss"))
		run(b, "sync")
		s, err := state.Create(filepath.Join(work, "adopt"))
		if err != nil {
			b.Fatal(err)
		}
		ours += timed(func() {
			res, err := adoptOne(b, s, mossRoot, 1)
			if err != nil {
				b.Fatal(err)
			}
			entries = res.Tx.Counts.Entries
		})
		run(b, "sync")
		cpal += timed(func() {
			run(b, "cp", "-al", treeDir, filepath.Join(work, "blit"))
			run(b, "sync")
		})
		warm(b, filepath.Join(dir, "stones"))
		run(b, "sync")
		s2, err := state.Create(filepath.Join(work, "stones"))
		if err != nil {
			b.Fatal(err)
		}
		fromStones += timed(func() {
			lk, _ := s2.Lock()
			defer lk.Unlock()
			im, err := s2.NewImporter(stone.Format{})
			if err != nil {
				b.Fatal(err)
			}
			defer im.Close()
			var frags []state.Fragment
			for _, f := range stones {
				fr, err := im.Stone(context.Background(), f)
				if err != nil {
					b.Fatal(err)
				}
				frags = append(frags, fr)
			}
			if err := im.Sync(); err != nil {
				b.Fatal(err)
			}
			if _, err := s2.Compose(state.ComposeOptions{Add: frags}); err != nil {
				b.Fatal(err)
			}
		})
		for _, d := range []string{"adopt", "blit", "stones"} {
			os.RemoveAll(filepath.Join(work, d))
		}
	}
	b.StopTimer()
	n := float64(b.N)
	b.ReportMetric(float64(entries), "entries")
	b.ReportMetric(ours.Seconds()*1e3/n, "adopt-ms/op")
	b.ReportMetric(cpal.Seconds()*1e3/n, "cp-al-ms/op")
	b.ReportMetric(fromStones.Seconds()*1e3/n, "stones-ms/op")
	b.ReportMetric(ours.Seconds()/cpal.Seconds(), "adopt/cp-al")
	b.ReportMetric(ours.Seconds()/fromStones.Seconds(), "adopt/stones")
}
