// Package gentree generates deterministic synthetic file trees for tests and
// benchmarks: the same Spec always gives the same names, metadata and content.
// Tree builds it in memory (tree model); Materialize writes it to disk; both
// describe the same files, so a benchmark can compare an on-disk baseline
// (cp -a, a hardlink farm) with mossfs on identical input.
package gentree

import (
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"time"

	"github.com/mossfs/mossfs/tree"
)

// Spec sizes a generated tree.
type Spec struct {
	Dirs, Files, Symlinks int
	TotalBytes            int64 // total content of all regular files
	Seed                  uint64
}

// Full is the 65,000-entry tree the issues measure against: 3,000
// directories, 60,000 files, 2,000 symlinks, about 800 MB of content.
var Full = Spec{Dirs: 3000, Files: 60000, Symlinks: 2000, TotalBytes: 800 << 20, Seed: 1}

// Small is a quick tree with the same shape, for default test runs.
var Small = Spec{Dirs: 60, Files: 1200, Symlinks: 40, TotalBytes: 16 << 20, Seed: 1}

// Tiny is a few dozen entries, for crash tests and unit tests.
var Tiny = Spec{Dirs: 8, Files: 200, Symlinks: 10, TotalBytes: 1 << 20, Seed: 1}

// FromEnv returns Full when MOSSFS_BENCH_FULL=1, else Small.
func FromEnv() Spec {
	if os.Getenv("MOSSFS_BENCH_FULL") == "1" {
		return Full
	}
	return Small
}

// Entries returns the number of entries (not counting the root).
func (s Spec) Entries() int { return s.Dirs + s.Files + s.Symlinks }

// File describes one generated entry.
type File struct {
	Path   string // slash-separated, relative to the root, no leading slash
	Mode   uint32 // st_mode with type bits
	Size   int64  // regular files
	Target string // symlinks
	Mtime  tree.Timespec
	Index  int // index of regular files, the seed of their content
}

// baseTime is the mtime of the root; others are spread over a year after it.
const baseTime = 1700000000

// List returns every entry of the tree, parents before children.
func List(s Spec) []File {
	r := rand.New(rand.NewPCG(s.Seed, 0x6d6f7373))
	out := make([]File, 0, s.Entries())
	dirs := []string{""} // "" is the root
	depth := []int{0}
	for i := 0; i < s.Dirs; i++ {
		// Parents are mostly recent dirs, so the tree gets a realistic depth.
		p := r.IntN(len(dirs))
		if depth[p] > 6 {
			p = 0
		}
		name := fmt.Sprintf("d%04d", i)
		if dirs[p] != "" {
			name = dirs[p] + "/" + name
		}
		dirs = append(dirs, name)
		depth = append(depth, depth[p]+1)
		out = append(out, File{Path: name, Mode: tree.TypeDir | 0o755, Mtime: mtime(r)})
	}
	// Sizes: log-normal (many small files, a few large), scaled to TotalBytes.
	sizes := make([]float64, s.Files)
	var sum float64
	for i := range sizes {
		if r.IntN(50) == 0 {
			continue // empty files exist in every real tree
		}
		v := math.Exp(r.NormFloat64()*1.8 + 8.5)
		v = min(v, 64<<20)
		sizes[i] = v
		sum += v
	}
	scale := 0.0
	if sum > 0 {
		scale = float64(s.TotalBytes) / sum
	}
	var files []string
	for i := 0; i < s.Files; i++ {
		d := dirs[r.IntN(len(dirs))]
		name := fmt.Sprintf("f%05d%s", i, []string{".so", ".h", ".py", "", ".txt"}[i%5])
		if d != "" {
			name = d + "/" + name
		}
		mode := uint32(tree.TypeReg | 0o644)
		if i%7 == 0 {
			mode = tree.TypeReg | 0o755
		}
		files = append(files, name)
		out = append(out, File{Path: name, Mode: mode, Size: int64(sizes[i] * scale), Mtime: mtime(r), Index: i})
	}
	for i := 0; i < s.Symlinks; i++ {
		d := dirs[r.IntN(len(dirs))]
		name := fmt.Sprintf("l%04d", i)
		if d != "" {
			name = d + "/" + name
		}
		target := "/usr/" + files[r.IntN(len(files))]
		out = append(out, File{Path: name, Mode: tree.TypeLink | 0o777, Target: target, Mtime: mtime(r)})
	}
	return out
}

func mtime(r *rand.Rand) tree.Timespec {
	return tree.Timespec{Sec: baseTime + int64(r.IntN(365*86400)), Nsec: uint32(r.IntN(1e9))}
}

// ContentReader returns the content of regular file f: deterministic bytes
// that do not compress, so copies and hashes do real work.
func ContentReader(f File) io.Reader {
	return io.LimitReader(rand.NewChaCha8(seedOf(f.Index)), f.Size)
}

// Content returns the content of regular file f.
func Content(f File) []byte {
	b := make([]byte, f.Size)
	_, _ = io.ReadFull(ContentReader(f), b)
	return b
}

func seedOf(i int) [32]byte {
	var s [32]byte
	s[0], s[1], s[2], s[3] = byte(i), byte(i>>8), byte(i>>16), byte(i>>24)
	s[31] = 0x6d
	return s
}

// DigestFunc computes the content digest of a generated file (its fs-verity
// digest when the caller needs real objects; anything deterministic otherwise).
type DigestFunc func(File) [32]byte

// FakeDigest is a cheap deterministic stand-in digest, for trees whose
// objects are never read (image-writer and mount-latency benchmarks).
func FakeDigest(f File) [32]byte {
	var d [32]byte
	c := rand.NewChaCha8(seedOf(f.Index))
	_, _ = c.Read(d[:])
	return d
}

// Tree builds the tree in memory with FakeDigest digests: for image and
// mount benchmarks whose objects are never read.
func Tree(s Spec) *tree.Node { return TreeWithDigests(s, FakeDigest) }

// TreeWithDigests builds the tree in memory with external regular files whose
// Digest and Payload come from digest (FakeDigest if nil). Empty files have no payload.
func TreeWithDigests(s Spec, digest DigestFunc) *tree.Node {
	if digest == nil {
		digest = FakeDigest
	}
	root := tree.NewDir("", 0o755)
	root.Mtime = tree.Timespec{Sec: baseTime}
	byPath := map[string]*tree.Node{"": root}
	for _, f := range List(s) {
		dir, name := filepath.Split(f.Path)
		dir = trimSlash(dir)
		parent := byPath[dir]
		n := &tree.Node{Name: name, Mode: f.Mode, Nlink: 1, Mtime: f.Mtime}
		switch f.Mode & tree.TypeMask {
		case tree.TypeDir:
			n.Nlink = 2
			byPath[f.Path] = n
		case tree.TypeLink:
			n.Target = f.Target
			n.Size = uint64(len(f.Target))
		case tree.TypeReg:
			n.Size = uint64(f.Size)
			if f.Size > 0 {
				d := digest(f)
				n.Digest = d[:]
				n.Payload = fmt.Sprintf("%x/%x", d[:1], d[1:])
			}
		}
		parent.AddChild(n)
	}
	root.Sort()
	return root
}

func trimSlash(s string) string {
	if len(s) > 0 && s[len(s)-1] == '/' {
		return s[:len(s)-1]
	}
	return s
}

// Materialize writes the tree below dir (which must exist), with contents,
// modes and mtimes. It returns the total content bytes written.
func Materialize(dir string, s Spec) (int64, error) {
	list := List(s)
	var total int64
	buf := make([]byte, 1<<20)
	for _, f := range list {
		p := filepath.Join(dir, filepath.FromSlash(f.Path))
		switch f.Mode & tree.TypeMask {
		case tree.TypeDir:
			if err := os.Mkdir(p, os.FileMode(f.Mode&0o777)); err != nil {
				return total, fmt.Errorf("gentree: %w", err)
			}
		case tree.TypeLink:
			if err := os.Symlink(f.Target, p); err != nil {
				return total, fmt.Errorf("gentree: %w", err)
			}
		case tree.TypeReg:
			w, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, os.FileMode(f.Mode&0o777))
			if err != nil {
				return total, fmt.Errorf("gentree: %w", err)
			}
			n, err := io.CopyBuffer(w, ContentReader(f), buf)
			total += n
			if cerr := w.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return total, fmt.Errorf("gentree: writing %s: %w", p, err)
			}
		}
	}
	// Mtimes last, children before parents, so creating entries does not undo them.
	for i := len(list) - 1; i >= 0; i-- {
		f := list[i]
		p := filepath.Join(dir, filepath.FromSlash(f.Path))
		t := time.Unix(f.Mtime.Sec, int64(f.Mtime.Nsec))
		if f.Mode&tree.TypeMask == tree.TypeLink {
			continue // lutimes is not worth a syscall dependency here
		}
		if err := os.Chtimes(p, t, t); err != nil {
			return total, fmt.Errorf("gentree: %w", err)
		}
	}
	return total, nil
}
