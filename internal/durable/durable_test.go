package durable

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWriteReplacesFilesInSeveralDirectories(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	old := filepath.Join(a, "old")
	if err := os.WriteFile(old, []byte("old content, longer than the new\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	files := []File{
		{Path: old, Data: []byte("new\n")},
		{Path: filepath.Join(a, "fresh"), Data: []byte("fresh\n"), Perm: 0o600},
		{Path: filepath.Join(b, "other"), Data: nil, Perm: 0o640},
	}
	if err := Write(files...); err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		got, err := os.ReadFile(f.Path)
		if err != nil || string(got) != string(f.Data) {
			t.Errorf("%s: %q, %v; want %q", f.Path, got, err, f.Data)
		}
		st, err := os.Stat(f.Path)
		if err != nil {
			t.Fatal(err)
		}
		want := f.Perm
		if want == 0 {
			want = 0o644
		}
		if st.Mode().Perm() != want {
			t.Errorf("%s: mode %v, want %v", f.Path, st.Mode().Perm(), want)
		}
	}
	noTemps(t, a)
	noTemps(t, b)
}

func TestWriteFailureLeavesNoTemporaryFiles(t *testing.T) {
	dir := t.TempDir()
	// The second target is a directory: its rename fails after the first
	// file was renamed into place.
	if err := os.Mkdir(filepath.Join(dir, "adir"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "adir", "x"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	err := Write(File{Path: filepath.Join(dir, "first"), Data: []byte("1")}, File{Path: filepath.Join(dir, "adir"), Data: []byte("2")})
	if err == nil || !strings.Contains(err.Error(), "adir") {
		t.Fatalf("error %v, want one naming adir", err)
	}
	if got, err := os.ReadFile(filepath.Join(dir, "first")); err != nil || string(got) != "1" {
		t.Errorf("first: %q, %v (renamed before the failure: kept)", got, err)
	}
	noTemps(t, dir)
	// A directory that does not exist: nothing written at all.
	missing := filepath.Join(dir, "missing", "f")
	if err := Write(File{Path: filepath.Join(dir, "second"), Data: []byte("2")}, File{Path: missing}); err == nil {
		t.Fatal("writing into a missing directory succeeded")
	}
	if _, err := os.Stat(filepath.Join(dir, "second")); !os.IsNotExist(err) {
		t.Errorf("second exists after a failed batch: %v", err)
	}
	noTemps(t, dir)
}

// TestAbortChangesNothing: a batch begun and aborted (a switch whose mount
// failed) leaves the targets as they were and no temporary file; a batch
// whose Begin failed reports it at Commit and writes nothing.
func TestAbortChangesNothing(t *testing.T) {
	dir := t.TempDir()
	old := filepath.Join(dir, "old")
	if err := os.WriteFile(old, []byte("old\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	b := Begin(File{Path: old, Data: []byte("new\n")})
	b.Add(File{Path: filepath.Join(dir, "fresh"), Data: []byte("fresh\n")})
	b.Abort()
	if got, err := os.ReadFile(old); err != nil || string(got) != "old\n" {
		t.Errorf("old: %q, %v after Abort", got, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "fresh")); !os.IsNotExist(err) {
		t.Errorf("fresh exists after Abort: %v", err)
	}
	if err := b.Commit(); err == nil {
		t.Error("Commit after Abort succeeded")
	}
	noTemps(t, dir)

	b = Begin(File{Path: old, Data: []byte("new\n")})
	b.Add(File{Path: filepath.Join(dir, "missing", "f")})
	if err := b.Commit(); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("Commit of a batch with a file in a missing directory: %v, want an error naming it", err)
	}
	if got, err := os.ReadFile(old); err != nil || string(got) != "old\n" {
		t.Errorf("old: %q, %v after a failed batch", got, err)
	}
	noTemps(t, dir)
}

func noTemps(t *testing.T, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".tmp-") {
			t.Errorf("temporary file left: %s", filepath.Join(dir, e.Name()))
		}
	}
}
