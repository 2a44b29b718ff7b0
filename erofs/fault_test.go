package erofs

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"testing"
	"unsafe"

	"github.com/mossfs/mossfs/tree"
	"golang.org/x/sys/unix"
)

// TestWriteImageFaultInWorker: mkcomposefs --from-file builds its tree from
// a mapped dump, and a dump truncated under it must end in an error, not a
// crash: the caller asks for panics on faults (debug.SetPanicOnFault) and
// recovers them. Here the files' payloads (their redirect xattrs) live in a
// mapped file that is truncated before the image is written; in a large
// tree they are first read by the goroutines that hash the xattrs. The fault must reach the caller as
// a panic it can recover (without the hand-over the process died:
// "unexpected fault address").
func TestWriteImageFaultInWorker(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(4))
	p := filepath.Join(t.TempDir(), "dump")
	page := os.Getpagesize()
	data := make([]byte, page)
	copy(data, "ab/cdef0123456789")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	m, err := unix.Mmap(int(f.Fd()), 0, page, unix.PROT_READ, unix.MAP_PRIVATE|unix.MAP_POPULATE)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	payload := unsafe.String(&m[0], len("ab/cdef0123456789"))

	root := &tree.Node{Mode: tree.TypeDir | 0o755}
	for i := range 3 * parallelWriteInodes {
		root.AddChild(&tree.Node{Name: fmt.Sprintf("f%06d", i), Mode: tree.TypeReg | 0o644, Size: 1 << 20, Payload: payload})
	}
	if err := os.Truncate(p, 0); err != nil {
		t.Fatal(err)
	}

	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		r := recover()
		if _, ok := r.(interface{ Addr() uintptr }); !ok {
			t.Fatalf("recovered %v, want the memory fault", r)
		}
	}()
	err = WriteImage(io.Discard, root, DefaultWriteOptions())
	t.Fatalf("the image was written from a truncated mapping (err %v)", err)
}

// TestParseDumpFaultInHalves: the same for a mapped dump parsed in two
// halves (parseLines) and truncated before: the fault, in whichever half
// meets it first, reaches the caller as a panic it can recover.
func TestParseDumpFaultInHalves(t *testing.T) {
	defer func(n int) { parallelParseMin = n }(parallelParseMin)
	parallelParseMin = 1
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(4))
	var dump []byte
	dump = append(dump, "/ 0 40755 2 0 0 0 0.0 - - -\n"...)
	for i := 0; len(dump) < 6*os.Getpagesize(); i++ {
		dump = fmt.Appendf(dump, "/f%06d 0 100644 1 0 0 0 0.0 - - -\n", i)
	}
	p := filepath.Join(t.TempDir(), "dump")
	if err := os.WriteFile(p, dump, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	m, err := unix.Mmap(int(f.Fd()), 0, len(dump), unix.PROT_READ, unix.MAP_PRIVATE|unix.MAP_POPULATE)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	// Truncated once the whole dump has been checked for NUL bytes (which
	// would meet the fault in this goroutine), to 4 of its 6 pages: the
	// first half (and the count of its lines) stays whole, the goroutine
	// of the second half meets the fault.
	testParseLinesHook = func() {
		if err := os.Truncate(p, int64(4*os.Getpagesize())); err != nil {
			panic(err)
		}
	}
	defer func() { testParseLinesHook = nil }()
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		r := recover()
		if _, ok := r.(interface{ Addr() uintptr }); !ok {
			t.Fatalf("recovered %v, want the memory fault", r)
		}
	}()
	_, err = ParseDumpBytes(m, DumpOptions{Name: p})
	t.Fatalf("a truncated mapped dump was parsed (err %v)", err)
}
