package trigtest

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mossfs/mossfs/internal/gentree"
	"github.com/mossfs/mossfs/internal/state"
)

// BenchmarkComposeTriggers composes the generated tree (65k entries with
// MOSSFS_BENCH_FULL=1) with five transaction triggers, each watching its own
// package; every iteration changes one package, which only one trigger
// watches:
//
//	skip-rule  the four others are carried over from the parent
//	rerun-all  --rerun-triggers: all five run (moss's behaviour)
//
// Same run, same inputs: the ratio of the two is what the skip rule saves.
func BenchmarkComposeTriggers(b *testing.B) {
	requireRoot(b)
	s := newState(b)
	big := tmpDir(b)
	if _, err := gentree.Materialize(big, gentree.FromEnv()); err != nil {
		b.Fatal(err)
	}
	trigFiles := map[string]string{}
	var pkgDirs []string
	for i := 1; i <= 5; i++ {
		name := fmt.Sprintf("t%d", i)
		trigFiles["share/moss/triggers/tx.d/"+name+".yaml"] = fmt.Sprintf(
			"name: %s\ndescription: bench\nhandlers:\n  h: {run: /usr/libexec/probe, args: [write, /usr/share/bench-out/%s, \"$(f)\"]}\npaths:\n  \"/usr/share/bench/%s/(f:*)\": {handlers: [h]}\n", name, name, name)
		pkgDirs = append(pkgDirs, writeTree(b, map[string]string{"share/bench/" + name + "/v0": "0\n"}))
	}
	frags := []state.Fragment{importTree(b, s, big), importTree(b, s, probeTree(b)), importTree(b, s, writeTree(b, trigFiles))}
	for _, d := range pkgDirs {
		frags = append(frags, importTree(b, s, d))
	}
	resA, err := s.Compose(state.ComposeOptions{Add: frags, Time: epoch})
	if err != nil {
		b.Fatal(err)
	}
	if n := len(ran(resA.Tx)); n != 5 {
		b.Fatalf("A ran %d triggers, want 5", n)
	}
	b.Logf("tree: %d entries", resA.Tx.Counts.Entries)
	version := 0
	for _, mode := range []string{"skip-rule", "rerun-all"} {
		b.Run(mode, func(b *testing.B) {
			runs := 0
			for b.Loop() {
				b.StopTimer()
				// A new version of package 1: its file renamed, as an upgrade does.
				version++
				os.RemoveAll(filepath.Join(pkgDirs[0], "share/bench/t1"))
				os.MkdirAll(filepath.Join(pkgDirs[0], "share/bench/t1"), 0o755)
				os.WriteFile(filepath.Join(pkgDirs[0], "share/bench/t1", fmt.Sprintf("v%d", version)), []byte(strings.Repeat("x", version)), 0o644)
				pkg := importTree(b, s, pkgDirs[0])
				b.StartTimer()
				res, err := s.Compose(state.ComposeOptions{From: resA.Tx.ID, Add: []state.Fragment{pkg}, Time: epoch,
					Triggers: state.TriggerOptions{Rerun: mode == "rerun-all"}})
				if err != nil {
					b.Fatal(err)
				}
				runs += len(ran(res.Tx))
			}
			want := 1
			if mode == "rerun-all" {
				want = 5
			}
			if per := float64(runs) / float64(b.N); per != float64(want) {
				b.Errorf("%s ran %.1f triggers per compose, want %d", mode, per, want)
			}
			b.ReportMetric(float64(runs)/float64(b.N), "triggers-run/op")
		})
	}
}
