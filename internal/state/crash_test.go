package state_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mossfs/mossfs/internal/gentree"
	"github.com/mossfs/mossfs/internal/state"
	"github.com/mossfs/mossfs/internal/testenv"
)

// buildMossCompose builds the real moss-compose binary for the test.
func buildMossCompose(t testing.TB) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	modRoot := filepath.Dir(strings.TrimSpace(string(out)))
	bin := filepath.Join(t.TempDir(), "moss-compose")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/moss-compose")
	cmd.Dir = modRoot
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build moss-compose: %v\n%s", err, out)
	}
	return bin
}

// crashOp is one kind of run the crash test interrupts.
type crashOp struct {
	name   string
	points []string // crash points this run passes
	args   func(c *crashRun) []string
}

type crashRun struct {
	root   string
	trees  []string
	stones []string
	rng    *rand.Rand
	ids    []uint64 // existing transactions
}

// randomInput returns --tree DIR:/t<i> or, now and then, --stone FILE.
func (c *crashRun) randomInput() []string {
	if c.rng.IntN(4) == 0 {
		return []string{"--stone", c.stones[c.rng.IntN(len(c.stones))]}
	}
	return []string{"--tree", c.randomTree()}
}

// randomTree returns a --tree argument: tree i always goes to /t<i>, so a
// compose from a base that has it replaces it (same input key).
func (c *crashRun) randomTree() string {
	i := c.rng.IntN(len(c.trees))
	return c.trees[i] + ":/t" + strconv.Itoa(i)
}

var crashOps = []crashOp{
	{name: "import", points: []string{state.CPImportObjects},
		args: func(c *crashRun) []string { return append([]string{"import", "-q"}, c.randomInput()...) }},
	{name: "compose", points: []string{state.CPComposeAlloc, state.CPComposeInputs, state.CPComposeImage, state.CPComposeSynced, state.CPComposeMetaTemp, state.CPComposePublish},
		args: func(c *crashRun) []string {
			a := []string{"compose", "-q"}
			if len(c.ids) > 0 && c.rng.IntN(3) > 0 {
				a = append(a, "--from", strconv.FormatUint(c.ids[c.rng.IntN(len(c.ids))], 10))
			}
			if len(a) > 2 && c.rng.IntN(3) == 0 {
				return a // no new input: the fsync (not syncfs) path
			}
			return append(a, c.randomInput()...)
		}},
	{name: "remove", points: []string{state.CPRemoveUnpublish, state.CPGCImages, state.CPGCSweep},
		args: func(c *crashRun) []string {
			a := []string{"state", "remove", "-q", strconv.FormatUint(c.ids[c.rng.IntN(len(c.ids))], 10)}
			if c.rng.IntN(2) == 0 {
				a = append(a, "--no-gc")
			}
			return a
		}},
	{name: "gc", points: []string{state.CPGCImages, state.CPGCSweep},
		args: func(c *crashRun) []string { return []string{"gc", "-q", "--wait"} }},
}

// TestCrash kills a real moss-compose with SIGKILL during import, compose
// (of trees and .stone packages), remove and gc, at named crash points (the critical windows) and at random
// times, and checks after each kill that the state is consistent: it
// opens, no object is corrupt, every retained transaction's image is intact
// and references only present objects, its fragments are readable, no half
// transaction is listed and no id is ever reused.
func TestCrash(t *testing.T) {
	trials := 200
	if v := os.Getenv("MOSSFS_CRASH_TRIALS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("MOSSFS_CRASH_TRIALS=%q", v)
		}
		trials = n
	}
	bin := buildMossCompose(t)
	dir := t.TempDir()
	c := &crashRun{root: filepath.Join(dir, "moss"), rng: rand.New(rand.NewPCG(1, uint64(time.Now().UnixNano())))}
	stones := testenv.SharedPath(t, "testdata", "stones")
	c.stones = []string{filepath.Join(stones, "bash-completion-2.11-1-1-x86_64.stone"), filepath.Join(stones, "pineapple-1-1-1-x86_64.stone")}
	for i := range 4 {
		d := filepath.Join(dir, "tree"+strconv.Itoa(i))
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		spec := gentree.Tiny
		spec.Seed = uint64(i + 1)
		spec.TotalBytes = 256 << 10
		if _, err := gentree.Materialize(d, spec); err != nil {
			t.Fatal(err)
		}
		c.trees = append(c.trees, d)
	}
	run := func(env []string, args ...string) (killed bool, out string, err error) {
		cmd := exec.Command(bin, append(args[:1:1], append([]string{"--root", c.root}, args[1:]...)...)...)
		cmd.Env = append(os.Environ(), env...)
		b, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL {
				return true, string(b), nil
			}
		}
		return false, string(b), err
	}
	// A first transaction, so that later runs have something to build on.
	if _, out, err := run(nil, "compose", "-q", "--tree", c.trees[0]+":/t0"); err != nil {
		t.Fatalf("first compose: %v\n%s", err, out)
	}

	var maxID uint64 // highest id ever seen published
	seen := map[uint64]string{}
	killedAt := map[string]int{}
	opTime := map[string]time.Duration{}
	for _, op := range crashOps {
		opTime[op.name] = 40 * time.Millisecond
	}
	stats := map[string]int{}
	for trial := range trials {
		s, err := state.Open(c.root)
		if err != nil {
			t.Fatalf("trial %d: %v", trial, err)
		}
		c.ids, _ = s.IDs()
		if len(c.ids) > 6 { // keep the state small: trim without a crash
			if _, out, err := run(nil, "state", "remove", "-q", strconv.FormatUint(c.ids[0], 10)); err != nil {
				t.Fatalf("trial %d: trimming: %v\n%s", trial, err, out)
			}
			c.ids = c.ids[1:]
		}
		op := crashOps[c.rng.IntN(len(crashOps))]
		mode := c.rng.IntN(8)
		if op.name == "remove" && len(c.ids) < 3 {
			op, mode = crashOps[1], 7 // build up some transactions first
		}
		args := op.args(c)
		var killed bool
		var out string
		desc := op.name
		switch {
		case mode == 7:
			// Some runs complete, so that the state grows and changes.
			desc += "@none"
			start := time.Now()
			killed, out, err = run(nil, args...)
			// Random kills aim within a run's usual length.
			opTime[op.name] = (3*opTime[op.name] + time.Since(start)) / 4
		case mode < 4:
			// A named crash point, in the critical window.
			cp := op.points[c.rng.IntN(len(op.points))]
			desc += "@" + cp
			killed, out, err = run([]string{state.CrashPointEnv + "=" + cp}, args...)
			if killed {
				killedAt[cp]++
			}
		default:
			// A random moment.
			desc += "@random"
			cmd := exec.Command(bin, append(args[:1:1], append([]string{"--root", c.root}, args[1:]...)...)...)
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			time.Sleep(time.Duration(c.rng.Int64N(int64(opTime[op.name]) + 1)))
			cmd.Process.Signal(syscall.SIGKILL)
			err = cmd.Wait()
			if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				killed, err = true, nil
				killedAt["random"]++
			}
		}
		if err != nil && !strings.Contains(out, "no such transaction") {
			t.Fatalf("trial %d (%s %v): %v\n%s", trial, desc, args, err, out)
		}
		stats[op.name]++
		checkCrashState(t, fmt.Sprintf("trial %d (%s %v, killed %v)", trial, desc, args, killed), c.root, &maxID, seen)
	}
	// In the end gc cleans up every leftover of the interrupted runs.
	s, err := state.Open(c.root)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.GC(state.GCOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{s.ImagesDir(), filepath.Join(c.root, "transactions")} {
		ents, _ := os.ReadDir(d)
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), ".tmp-") {
				t.Errorf("after gc: %s left in %s", e.Name(), d)
			}
		}
	}
	checkCrashState(t, "final", c.root, &maxID, seen)
	t.Logf("%d trials: %v; kills at %v; %d transaction ids used", trials, stats, killedAt, maxID)
}

func checkCrashState(t *testing.T, what, root string, maxID *uint64, seen map[uint64]string) {
	t.Helper()
	s, err := state.Open(root)
	if err != nil {
		t.Fatalf("%s: state does not open: %v", what, err)
	}
	txs, err := s.List()
	if err != nil {
		t.Fatalf("%s: list: %v", what, err)
	}
	var newMax uint64
	for _, tx := range txs {
		if img, ok := seen[tx.ID]; ok && img != tx.Image {
			t.Fatalf("%s: transaction id %d reused (image %s, was %s)", what, tx.ID, tx.Image, img)
		}
		if _, ok := seen[tx.ID]; !ok {
			if tx.ID <= *maxID {
				t.Fatalf("%s: new transaction %d not above every earlier id (%d)", what, tx.ID, *maxID)
			}
			seen[tx.ID] = tx.Image
		}
		newMax = max(newMax, tx.ID)
		if _, err := s.Fragments(tx); err != nil {
			t.Fatalf("%s: half transaction %d listed: %v", what, tx.ID, err)
		}
	}
	*maxID = max(*maxID, newMax)
	res, err := s.Verify(state.VerifyOptions{NoQuarantine: true})
	if err != nil {
		t.Fatalf("%s: verify: %v", what, err)
	}
	if !res.OK() {
		t.Fatalf("%s: verify: corrupt %v, missing %v, bad images %v, exposed %v, index %+v", what, res.Corrupt, res.Missing, res.BadImages, res.Exposed, res.Index)
	}
}

// TestCrashAtEveryComposePoint kills a compose once at each of its named
// crash points, in order, and checks the state after each kill as TestCrash
// does: the deterministic part of TestCrash, which reaches a given point
// only now and then. (A kill between writing the metadata's temporary file,
// mode 0644 as the record it becomes, and renaming it once made verify
// report transactions/.tmp-meta-* as exposed.)
func TestCrashAtEveryComposePoint(t *testing.T) {
	bin := buildMossCompose(t)
	dir := t.TempDir()
	root := filepath.Join(dir, "moss")
	tree := filepath.Join(dir, "tree")
	if err := os.Mkdir(tree, 0o755); err != nil {
		t.Fatal(err)
	}
	spec := gentree.Tiny
	spec.TotalBytes = 64 << 10
	if _, err := gentree.Materialize(tree, spec); err != nil {
		t.Fatal(err)
	}
	run := func(env []string, args ...string) (killed bool, out []byte) {
		cmd := exec.Command(bin, append(args[:1:1], append([]string{"--root", root}, args[1:]...)...)...)
		cmd.Env = append(os.Environ(), env...)
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL {
				return true, out
			}
		}
		if err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
		return false, out
	}
	run(nil, "compose", "-q", "--tree", tree+":/t0")
	var maxID uint64
	seen := map[uint64]string{}
	points := []string{state.CPComposeAlloc, state.CPComposeInputs, state.CPComposeImage, state.CPComposeSynced, state.CPComposeMetaTemp, state.CPComposePublish}
	for i, cp := range points {
		args := []string{"compose", "-q", "--tree", tree + ":/t" + strconv.Itoa(i+1)}
		killed, out := run([]string{state.CrashPointEnv + "=" + cp}, args...)
		if !killed {
			t.Fatalf("compose did not reach crash point %s\n%s", cp, out)
		}
		checkCrashState(t, "killed at "+cp, root, &maxID, seen)
	}
}
