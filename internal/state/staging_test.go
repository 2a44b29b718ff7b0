package state

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// leaveStaging makes what a partial pull killed mid-way leaves: a staging
// directory with fetched files, locked by nobody.
func leaveStaging(t *testing.T, s *State) string {
	t.Helper()
	dir, err := os.MkdirTemp(s.Root(), StagingPrefix)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "partial-123", "ab"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "partial-123", "ab", "cdef"), []byte("fetched"), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

func stagingLeft(t *testing.T, s *State) []string {
	t.Helper()
	ents, err := os.ReadDir(s.Root())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), StagingPrefix) {
			out = append(out, e.Name())
		}
	}
	return out
}

// TestGCSweepsStaging: gc removes the staging directories of crashed
// partial pulls (and their spool files), never the one a live pull holds;
// the crash recovery at lock time removes them too.
func TestGCSweepsStaging(t *testing.T) {
	s := newState(t)
	stale := leaveStaging(t, s)
	spool, err := os.CreateTemp(s.Store().Root(), SpoolPrefix)
	if err != nil {
		t.Fatal(err)
	}
	spool.Close()
	live, err := s.NewStaging()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(live.Dir, "f"), []byte("in use"), 0o600); err != nil {
		t.Fatal(err)
	}

	res, err := s.GC(GCOptions{DryRun: true})
	if err != nil || res.StagingRemoved != 1 || res.TempRemoved != 1 {
		t.Fatalf("gc --dry-run: %+v %v; want 1 staging directory, 1 spool file", res, err)
	}
	if _, err := os.Stat(stale); err != nil {
		t.Fatalf("gc --dry-run removed %s: %v", stale, err)
	}
	res, err = s.GC(GCOptions{})
	if err != nil || res.StagingRemoved != 1 || res.TempRemoved != 1 {
		t.Fatalf("gc: %+v %v; want 1 staging directory, 1 spool file", res, err)
	}
	if _, err := os.Stat(stale); err == nil {
		t.Errorf("gc left %s", stale)
	}
	if _, err := os.Stat(spool.Name()); err == nil {
		t.Errorf("gc left %s", spool.Name())
	}
	if _, err := os.Stat(filepath.Join(live.Dir, "f")); err != nil {
		t.Errorf("gc removed the staging directory a live pull holds: %v", err)
	}
	if err := live.Release(); err != nil {
		t.Fatal(err)
	}
	if left := stagingLeft(t, s); len(left) != 0 {
		t.Errorf("after Release: %v left", left)
	}

	// At lock time: the first Lock after the crash removes it.
	stale = leaveStaging(t, s)
	live, err = s.NewStaging()
	if err != nil {
		t.Fatal(err)
	}
	defer live.Release()
	lk, err := s.Lock()
	if err != nil {
		t.Fatal(err)
	}
	lk.Unlock()
	if _, err := os.Stat(stale); err == nil {
		t.Errorf("Lock left %s", stale)
	}
	if left := stagingLeft(t, s); len(left) != 1 || filepath.Join(s.Root(), left[0]) != live.Dir {
		t.Errorf("after Lock: %v, want only the live %s", left, live.Dir)
	}
}
