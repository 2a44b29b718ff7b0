package oci

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mossfs/mossfs/tree"
)

// TestObjectDirBeneath: objects are read in the store's form through the
// held fan-out directories, and nothing outside the object directory is
// reachable: not through a symlink in an object's place, a fan-out
// directory that is a symlink, "..", an absolute path, or a payload that
// is not in the store's form.
func TestObjectDirBeneath(t *testing.T) {
	base := t.TempDir()
	objs := filepath.Join(base, "objects")
	outside := filepath.Join(base, "secret")
	if err := os.WriteFile(outside, []byte("outside"), 0o600); err != nil {
		t.Fatal(err)
	}
	hex62 := strings.Repeat("ab", 31)
	write := func(rel, content string) {
		p := filepath.Join(objs, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("00/"+hex62, "object 00")
	write("01/"+hex62, "object 01")
	write("other/name", "not the store's form")
	if err := os.Symlink(outside, filepath.Join(objs, "00", strings.Repeat("cd", 31))); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(base, filepath.Join(objs, "02")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(objs, "02x")); err != nil {
		t.Fatal(err)
	}
	o, err := OpenObjectDir(objs)
	if err != nil {
		t.Fatal(err)
	}
	read := func(payload string) (string, error) {
		r, err := o.Open(&tree.Node{Payload: payload})
		if err != nil {
			return "", err
		}
		defer r.Close()
		b, err := io.ReadAll(r)
		return string(b), err
	}
	for payload, want := range map[string]string{
		"00/" + hex62: "object 00",
		"01/" + hex62: "object 01",
		"other/name":  "not the store's form",
	} {
		if got, err := read(payload); err != nil || got != want {
			t.Errorf("%s: %q, %v; want %q", payload, got, err, want)
		}
	}
	for _, payload := range []string{
		"00/" + strings.Repeat("cd", 31), // a symlink in an object's place
		"02/" + hex62,                    // a fan-out directory that is a symlink
		"02x",                            // a symlink, not in the store's form
		"../secret",
		"00/../../secret",
		outside,
		"03/" + hex62, // missing
	} {
		if got, err := read(payload); err == nil {
			t.Errorf("%s: read %q, want an error", payload, got)
		}
	}
	if err := o.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := read("01/" + hex62); err == nil {
		t.Error("read after Close")
	}
}
