package hugeheap

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
)

// anonHuge is the process's anonymous memory in huge pages, in KiB.
func anonHuge(t *testing.T) int {
	t.Helper()
	f, err := os.Open("/proc/self/smaps_rollup")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "AnonHugePages:"); ok {
			n, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatal("no AnonHugePages in smaps_rollup")
	return 0
}

// TestGrowGivesHugePages: after Grow, what the process allocates in small
// pieces (as a tree's slabs) is backed by huge pages, and holds what is
// written to it; without Grow the same allocations get none (the system
// setting being "madvise", the runtime's memory gets no huge pages).
//
// It measures in a process of its own: in one that has run it before
// (go test -count=2), the allocations reuse memory that already has its
// huge pages, and the process's count does not grow.
func TestGrowGivesHugePages(t *testing.T) {
	b, err := os.ReadFile("/sys/kernel/mm/transparent_hugepage/enabled")
	if err != nil || !bytes.Contains(b, []byte("[madvise]")) {
		t.Skipf("transparent huge pages are not \"madvise\" here (%q, %v): nothing to compare", b, err)
	}
	if os.Getenv(freshEnv) == "" {
		cmd := exec.Command(os.Args[0], "-test.run=^TestGrowGivesHugePages$", "-test.count=1", "-test.v")
		cmd.Env = append(os.Environ(), freshEnv+"=1")
		out, err := cmd.CombinedOutput()
		t.Logf("in a fresh process:\n%s", out)
		if err != nil {
			t.Errorf("in a fresh process: %v", err)
		}
		return
	}
	old := debug.SetGCPercent(-1)
	defer debug.SetGCPercent(old)

	fill := func() [][]byte {
		var keep [][]byte
		for i := range 256 { // 16 MiB in 64 KiB blocks
			p := make([]byte, 64<<10)
			for j := range p {
				p[j] = byte(i + j)
			}
			keep = append(keep, p)
		}
		return keep
	}
	before := anonHuge(t)
	keep := fill()
	without := anonHuge(t) - before
	Grow(64 << 20)
	before = anonHuge(t)
	keep2 := fill()
	with := anonHuge(t) - before
	for i, p := range keep2 {
		for j := range p {
			if p[j] != byte(i+j) {
				t.Fatalf("block %d byte %d: %d, want %d", i, j, p[j], byte(i+j))
			}
		}
	}
	t.Logf("huge pages mapped by 16 MiB of allocations: %d KiB without Grow, %d KiB after Grow", without, with)
	// Half: the kernel may fail to find some free huge pages.
	if with < 8<<10 {
		t.Errorf("after Grow, 16 MiB of allocations got %d KiB of huge pages, want at least 8 MiB", with)
	}
	if without >= 8<<10 {
		t.Errorf("without Grow, 16 MiB of allocations got %d KiB of huge pages: the test cannot tell Grow's effect", without)
	}
	runtime.KeepAlive(keep)
}

const freshEnv = "MOSSFS_TEST_HUGEHEAP_FRESH"

// TestGrowSmallIsNoop: below MinSize nothing is allocated or collected.
// The collector is off while it counts, and a collection a test before
// started is finished first: the only collections counted are those Grow
// asks for (runtime.GC runs whatever the setting).
func TestGrowSmallIsNoop(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	runtime.GC()
	var before, after debug.GCStats
	debug.ReadGCStats(&before)
	allocs := testing.AllocsPerRun(10, func() { Grow(MinSize - 1) })
	debug.ReadGCStats(&after)
	if after.NumGC != before.NumGC {
		t.Errorf("Grow(%d) ran %d collections, want none", MinSize-1, after.NumGC-before.NumGC)
	}
	if allocs != 0 {
		t.Errorf("Grow(%d) made %v allocations, want none", MinSize-1, allocs)
	}
}
