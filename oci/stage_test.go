package oci

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// TestSweepStages: a staging directory no export holds (a killed export's)
// is removed, so is an unrenamed one an hour old; the staging directory of
// a running export, a fresh unrenamed one and anything else stay.
func TestSweepStages(t *testing.T) {
	dir := t.TempDir()
	live, unlock, err := makeStage(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	mk := func(name string, age time.Duration) {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Join(p, "blobs", "sha256"), 0o700); err != nil {
			t.Fatal(err)
		}
		old := time.Now().Add(-age)
		if err := os.Chtimes(p, old, old); err != nil {
			t.Fatal(err)
		}
	}
	mk(stagePrefix+"killed", 0)
	mk(stageNewPrefix+"old", 2*time.Hour)
	mk(stageNewPrefix+"fresh", time.Minute)
	mk("blobs", 2*time.Hour)
	if err := os.WriteFile(filepath.Join(dir, stagePrefix+"file"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	sweepStages(dir)
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range ents {
		got = append(got, e.Name())
	}
	want := []string{stageNewPrefix + "fresh", "blobs", filepath.Base(live), stagePrefix + "file"}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("after the sweep: %q, want %q", got, want)
	}
	// Once its export ends (the lock released), the stage is swept too.
	unlock()
	sweepStages(dir)
	if _, err := os.Stat(live); !os.IsNotExist(err) {
		t.Errorf("released stage %s not swept: %v", live, err)
	}
}
