package chunked

import (
	"crypto/sha256"
	"io"
	"os"
	"path/filepath"
	"testing"
)

func TestIndexSource(t *testing.T) {
	dir := t.TempDir()
	content := []byte("hello")
	d := sha256.Sum256(content)
	obj := filepath.Join(dir, "cas", "objects", "ab", "cdef")
	os.MkdirAll(filepath.Dir(obj), 0o700)
	os.WriteFile(obj, content, 0o600)
	link := filepath.Join(dir, IndexPath(d))
	os.MkdirAll(filepath.Dir(link), 0o700)
	if err := os.Symlink("../../../cas/objects/ab/cdef", link); err != nil {
		t.Fatal(err)
	}
	// A link that leaves the store, and a dangling one.
	out := filepath.Join(t.TempDir(), "outside")
	os.WriteFile(out, []byte("secret"), 0o600)
	escape := sha256.Sum256([]byte("secret"))
	os.MkdirAll(filepath.Dir(filepath.Join(dir, IndexPath(escape))), 0o700)
	os.Symlink(out, filepath.Join(dir, IndexPath(escape)))
	dangling := sha256.Sum256([]byte("gone"))
	os.MkdirAll(filepath.Dir(filepath.Join(dir, IndexPath(dangling))), 0o700)
	os.Symlink("../../../cas/objects/00/none", filepath.Join(dir, IndexPath(dangling)))

	s, err := OpenIndex(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if !s.HasSHA256(d) {
		t.Fatal("indexed content not found")
	}
	rc, err := s.OpenSHA256(d)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(rc)
	rc.Close()
	if string(got) != "hello" {
		t.Fatalf("read %q", got)
	}
	for name, x := range map[string][32]byte{"escaping": escape, "dangling": dangling, "absent": sha256.Sum256([]byte("x"))} {
		if s.HasSHA256(x) {
			t.Errorf("%s link counted as present", name)
		}
		if rc, err := s.OpenSHA256(x); err == nil {
			rc.Close()
			t.Errorf("%s link opened", name)
		}
	}
}
