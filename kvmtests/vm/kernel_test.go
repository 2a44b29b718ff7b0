package vm

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// TestCachedKernelModules checks the resolver's output on the real cached
// kernel, if one was fetched already (the VM tests fetch it): dependencies
// load first, modinfo parses, and the cache entry loads back.
func TestCachedKernelModules(t *testing.T) {
	repo, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	cache := filepath.Join(repo, "kvmtests", ".cache")
	k, err := newestCached(cache, DefaultMeta, DefaultModules)
	if err != nil {
		t.Skip("no cached kernel yet (go test ./kvmtests fetches it)")
	}
	for _, m := range DefaultModules {
		if !slices.Contains(k.Modules, m) {
			t.Errorf("load order %v lacks %s", k.Modules, m)
		}
	}
	pos := map[string]int{}
	for i, m := range k.Modules {
		pos[m] = i
	}
	for _, m := range k.Modules {
		data, err := os.ReadFile(filepath.Join(k.ModuleDir, m+".ko"))
		if err != nil {
			t.Fatal(err)
		}
		deps, err := ModuleDepends(data)
		if err != nil {
			t.Fatalf("%s: %v", m, err)
		}
		for _, d := range deps {
			if p, ok := pos[normModName(d)]; ok && p > pos[m] {
				t.Errorf("%s loads before its dependency %s: %v", m, d, k.Modules)
			}
		}
	}
	if _, err := ModuleDepends([]byte("not elf")); err == nil {
		t.Error("ModuleDepends accepted garbage")
	}
	t.Logf("%s: load order %v", k.Package, k.Modules)
}
