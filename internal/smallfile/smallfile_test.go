package smallfile

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

// TestReadMatchesOSReadFile: empty, small, exactly the first buffer and
// larger files read back as os.ReadFile reads them; a missing file and a
// directory fail as os.ReadFile's do.
func TestReadMatchesOSReadFile(t *testing.T) {
	dir := t.TempDir()
	for _, size := range []int{0, 2, 2047, 2048, 2049, 100_000} {
		p := filepath.Join(dir, "f")
		data := bytes.Repeat([]byte("0123456789abcdef"), size/16+1)[:size]
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		got, err := Read(p)
		want, _ := os.ReadFile(p)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("size %d: read %d bytes, %v; os.ReadFile %d bytes", size, len(got), err, len(want))
		}
	}
	// /proc files have no size: read until end of file.
	got, err := Read("/proc/self/mountinfo")
	if err != nil || len(got) == 0 {
		t.Errorf("/proc/self/mountinfo: %d bytes, %v", len(got), err)
	}
	if _, err := Read(filepath.Join(dir, "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: %v, want fs.ErrNotExist", err)
	}
	var pe *os.PathError
	if _, err := Read(dir); !errors.As(err, &pe) || pe.Path != dir {
		t.Errorf("directory: %v, want a *os.PathError naming it", err)
	}
}
