package uring

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

func newRing(t *testing.T, entries uint32) *Ring {
	t.Helper()
	r, err := New(entries)
	if err != nil {
		t.Skipf("io_uring is not available here: %v", err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// TestFsyncCompletions: every fsync queued completes once, with its data;
// one of a descriptor that is not open fails with EBADF, the others
// succeed; a full submission ring says so, and takes more once submitted.
func TestFsyncCompletions(t *testing.T) {
	r := newRing(t, 4)
	dir := t.TempDir()
	var fds []int
	for _, name := range []string{"a", "b", "c"} {
		f, err := os.Create(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		f.WriteString(name)
		fds = append(fds, int(f.Fd()))
	}
	closed, err := unix.Open(dir, unix.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	unix.Close(closed)
	for i, fd := range append(fds, closed) {
		if err := r.Fsync(fd, uint64(10+i)); err != nil {
			t.Fatalf("queueing fsync %d: %v", i, err)
		}
	}
	if err := r.Fsync(fds[0], 99); !errors.Is(err, ErrFull) {
		t.Fatalf("a fifth fsync in a ring of 4: %v, want ErrFull", err)
	}
	if err := r.Submit(); err != nil {
		t.Fatal(err)
	}
	if err := r.Fsync(fds[0], 14); err != nil {
		t.Fatalf("queueing after Submit: %v", err)
	}
	done, err := r.Wait()
	if err != nil {
		t.Fatal(err)
	}
	var got []uint64
	for _, c := range done {
		got = append(got, c.Data)
		if want := c.Data == 13; (c.Err != nil) != want || (want && !errors.Is(c.Err, unix.EBADF)) {
			t.Errorf("fsync %d: %v", c.Data, c.Err)
		}
	}
	slices.Sort(got)
	if !slices.Equal(got, []uint64{10, 11, 12, 13, 14}) {
		t.Errorf("completions %v, want 10…14 once each", got)
	}
	if done, err := r.Wait(); err != nil || len(done) != 0 {
		t.Errorf("Wait with nothing in flight: %v, %v", done, err)
	}
}
