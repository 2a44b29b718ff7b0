package fsverity

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

func hexd(d [Size]byte) string { return hex.EncodeToString(d[:]) }

// Known vectors from composefs-format.md §13.
func TestVectors(t *testing.T) {
	for _, tc := range []struct {
		in   []byte
		want string
	}{
		{[]byte("hello world\n"), "37061ef2ac4c21bec68489b56138c5780306a4ad7fe6676236ecdf2c9027cd92"},
		{[]byte("foo bar baz\n"), "91e7d88cb7bc9cf6d8db3b0ecf89af4abf204bef5b3ade5113d5b62ef374e70b"},
		{nil, "3d248ca542a24fc62d1c43b916eae5016878e2533c88238480b26128a1f1af95"},
		{make([]byte, 4096), "babc284ee4ffe7f449377fbf6692715b43aec7bc39c094a95878904d34bac97e"},
	} {
		if got := hexd(Sum(tc.in)); got != tc.want {
			t.Errorf("Sum(%q...) = %s, want %s", trunc(tc.in), got, tc.want)
		}
		d, err := DigestReader(bytes.NewReader(tc.in))
		if err != nil || hexd(d) != tc.want {
			t.Errorf("DigestReader(%q...) = %s, %v; want %s", trunc(tc.in), hexd(d), err, tc.want)
		}
	}
}

func trunc(b []byte) []byte { return b[:min(len(b), 16)] }

func randomBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		v := r.Uint64()
		for j := range 8 {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	for i := n &^ 7; i < n; i++ {
		b[i] = byte(r.Uint32())
	}
	return b
}

// fsverityTool runs the Debian fsverity tool, the independent oracle.
func fsverityTool(t *testing.T, path string) string {
	t.Helper()
	out, err := exec.Command("fsverity", "digest", "--hash-alg=sha256", "--block-size=4096", "--compact", path).CombinedOutput()
	if err != nil {
		t.Fatalf("fsverity digest %s: %v\n%s", path, err, out)
	}
	return strings.TrimSpace(string(out))
}

func TestAgainstFsverityTool(t *testing.T) {
	if _, err := exec.LookPath("fsverity"); err != nil {
		t.Fatal("the fsverity tool (Debian package fsverity) is required: run scripts/install-deps.sh")
	}
	dir := t.TempDir()
	// Sizes around every boundary of the tree: data block, level-0 block
	// (128 data blocks = 512 KiB), level-1 block (64 MiB), plus 100 MiB.
	sizes := []int{0, 1, 4095, 4096, 4097, 8192, 128 * 4096, 128*4096 + 1, 129 * 4096,
		1<<20 + 1, 4*chunkSize - 1, 4 * chunkSize, 4*chunkSize + 1,
		128 * 128 * 4096, 128*128*4096 + 4096, 100 << 20}
	for i, size := range sizes {
		data := randomBytes(size, uint64(i+1))
		path := filepath.Join(dir, "f"+strconv.Itoa(size))
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		want := fsverityTool(t, path)
		check := func(how string, d [Size]byte, err error) {
			t.Helper()
			if err != nil {
				t.Errorf("size %d %s: %v", size, how, err)
			} else if hexd(d) != want {
				t.Errorf("size %d %s = %s, fsverity tool says %s", size, how, hexd(d), want)
			}
		}
		check("Sum", Sum(data), nil)
		d, err := DigestFile(path)
		check("DigestFile", d, err)
		d, err = digestReaderAt(bytes.NewReader(data), int64(size), 1)
		check("DigestReaderAt/1 worker", d, err)
		d, err = digestReaderAt(bytes.NewReader(data), int64(size), 3)
		check("DigestReaderAt/3 workers", d, err)
		if size <= 8<<20 {
			// Streaming in odd-sized writes, Sum in the middle must not disturb.
			h := New()
			p := data
			for k := 1; len(p) > 0; k = k*7%10007 + 1 {
				n := min(k, len(p))
				h.Write(p[:n])
				p = p[n:]
				_ = h.Sum()
			}
			check("Hasher", h.Sum(), nil)
			h.Reset()
			h.Write(data)
			check("Hasher after Reset", h.Sum(), nil)
		}
	}
}

func TestShortFile(t *testing.T) {
	data := randomBytes(5*chunkSize, 7)
	for _, w := range []int{1, 2} {
		_, err := digestReaderAt(bytes.NewReader(data), int64(len(data))+10, w)
		if !errors.Is(err, ErrShortFile) {
			t.Errorf("workers %d: error %v, want ErrShortFile", w, err)
		}
	}
	if _, err := DigestFile(t.TempDir()); err == nil {
		t.Error("DigestFile of a directory succeeded")
	}
}

func TestEnableMeasureNotSupported(t *testing.T) {
	// This host kernel has no CONFIG_FS_VERITY (kernel.md §2); the real path
	// is checked in the VM (kvmtests). Elsewhere the ioctls may work.
	for _, dir := range []string{t.TempDir(), "/dev/shm"} {
		if _, err := os.Stat(dir); err != nil {
			continue // no /dev/shm in the VM's initramfs
		}
		f, err := os.CreateTemp(dir, "verity")
		if err != nil {
			t.Fatal(err)
		}
		f.WriteString("hello world\n")
		f.Close()
		defer os.Remove(f.Name())
		ro, err := os.Open(f.Name())
		if err != nil {
			t.Fatal(err)
		}
		defer ro.Close()
		_, merr := Measure(int(ro.Fd()))
		eerr := Enable(int(ro.Fd()))
		if eerr == nil {
			d, err := Measure(int(ro.Fd()))
			if err != nil || hexd(d) != "37061ef2ac4c21bec68489b56138c5780306a4ad7fe6676236ecdf2c9027cd92" {
				t.Errorf("%s: verity enabled but Measure = %s, %v", dir, hexd(d), err)
			}
			if !errors.Is(merr, ErrNotEnabled) {
				t.Errorf("%s: Measure before Enable: %v, want ErrNotEnabled", dir, merr)
			}
			continue
		}
		if !errors.Is(eerr, ErrNotSupported) {
			t.Errorf("%s: Enable: %v, want ErrNotSupported", dir, eerr)
		}
		if !errors.Is(merr, ErrNotSupported) {
			t.Errorf("%s: Measure: %v, want ErrNotSupported", dir, merr)
		}
		t.Logf("%s: %v", dir, eerr)
	}
}

func TestEnableWritableFd(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "verity")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := Enable(int(f.Fd())); err == nil {
		t.Error("Enable on a writable fd succeeded")
	}
}

func benchSize() int {
	if os.Getenv("MOSSFS_BENCH_FULL") == "1" {
		return 1 << 30
	}
	return 16 << 20
}

// BenchmarkDigest measures the fs-verity digest single-core and on all
// cores, in memory and from a (page-cached) file. The metric x-sha256 is its
// throughput relative to plain single-core SHA-256 over the same bytes,
// measured in the same run: one baseline pass right after every timed
// iteration, so both see the same machine load.
func BenchmarkDigest(b *testing.B) {
	size := benchSize()
	data := randomBytes(size, 42)
	path := filepath.Join(b.TempDir(), "data")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		b.Fatal(err)
	}
	bench := func(name string, fn func() error) {
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(size))
			var base time.Duration
			for b.Loop() {
				if err := fn(); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				start := time.Now()
				sha256.Sum256(data)
				base += time.Since(start)
				b.StartTimer()
			}
			b.ReportMetric(base.Seconds()/b.Elapsed().Seconds(), "x-sha256")
		})
	}
	r := bytes.NewReader(data)
	bench("sha256-baseline", func() error { sha256.Sum256(data); return nil })
	bench("Sum-1core", func() error { Sum(data); return nil })
	bench("ReaderAt-1core", func() error { _, err := digestReaderAt(r, int64(size), 1); return err })
	bench("ReaderAt-parallel", func() error {
		_, err := digestReaderAt(r, int64(size), runtime.GOMAXPROCS(0))
		return err
	})
	bench("DigestFile-parallel", func() error { _, err := DigestFile(path); return err })
}

// FuzzDigest checks the three ways of computing a digest against each
// other: Sum, streaming writes split at arbitrary points, and the chunked
// (parallel) ReaderAt path; rep repeats the input so that multi-level trees
// and the parallel path are reached too.
func FuzzDigest(f *testing.F) {
	f.Add([]byte("hello world\n"), uint16(1), uint16(5))
	f.Add(make([]byte, 4096), uint16(3), uint16(4096))
	f.Add([]byte{1, 2, 3}, uint16(60000), uint16(1000))
	f.Fuzz(func(t *testing.T, unit []byte, rep uint16, split uint16) {
		if len(unit) == 0 {
			unit = []byte{0}
		}
		n := int(rep) % (8*chunkSize/len(unit) + 2)
		data := bytes.Repeat(unit, n)
		want := Sum(data)
		h := New()
		step := int(split) + 1
		for p := data; len(p) > 0; {
			k := min(step, len(p))
			h.Write(p[:k])
			p = p[k:]
		}
		if got := h.Sum(); got != want {
			t.Fatalf("streaming (step %d) %x != Sum %x (%d bytes)", step, got, want, len(data))
		}
		for _, w := range []int{1, 3} {
			got, err := digestReaderAt(bytes.NewReader(data), int64(len(data)), w)
			if err != nil || got != want {
				t.Fatalf("ReaderAt/%d workers %x, %v != Sum %x (%d bytes)", w, got, err, want, len(data))
			}
		}
	})
}
