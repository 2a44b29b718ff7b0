package vm

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestCpioAgainstGNUCpio extracts the archive with GNU cpio (the oracle)
// and compares names, types, modes and contents.
func TestCpioAgainstGNUCpio(t *testing.T) {
	if _, err := exec.LookPath("cpio"); err != nil {
		t.Skip("GNU cpio not installed (apt-get install cpio)")
	}
	ir := NewInitramfs()
	ir.File("bin/tool", 0o755, []byte("#!/bin/sh\necho hi\n"))
	ir.File("a/b/c/deep.txt", 0o600, bytes.Repeat([]byte("x"), 4097))
	ir.File("odd", 0o644, []byte("abc")) // name and data need padding
	ir.File("empty", 0o644, nil)
	ir.Symlink("bin/sh", "busybox")
	var buf bytes.Buffer
	if err := ir.WriteCpio(&buf); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cmd := exec.Command("cpio", "-id", "--quiet", "--no-absolute-filenames")
	cmd.Dir, cmd.Stdin = dir, &buf
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cpio -id: %v: %s", err, out)
	}
	check := func(p string, mode os.FileMode, content string) {
		st, err := os.Lstat(filepath.Join(dir, p))
		if err != nil {
			t.Errorf("%s: %v", p, err)
			return
		}
		if st.Mode() != mode {
			t.Errorf("%s: mode %v, want %v", p, st.Mode(), mode)
		}
		if st.Mode().IsRegular() {
			data, _ := os.ReadFile(filepath.Join(dir, p))
			if string(data) != content {
				t.Errorf("%s: content %q", p, data)
			}
		}
	}
	check("bin/tool", 0o755, "#!/bin/sh\necho hi\n")
	check("a/b/c/deep.txt", 0o600, strings.Repeat("x", 4097))
	check("odd", 0o644, "abc")
	check("empty", 0o644, "")
	check("a/b", os.ModeDir|0o755, "")
	check("proc", os.ModeDir|0o755, "")
	if l, err := os.Readlink(filepath.Join(dir, "bin/sh")); err != nil || l != "busybox" {
		t.Errorf("bin/sh: %q %v", l, err)
	}
}
