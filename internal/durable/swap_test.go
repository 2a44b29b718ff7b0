package durable

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

func readOr(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		return "error: " + err.Error()
	}
	return string(b)
}

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// TestSwapReusesTheSwapFile: a file written with Swap takes the swap
// file's place, the swap file then holds the old content, and the next
// write goes into that same inode (no new file), with exactly the new
// length and mode.
func TestSwapReusesTheSwapFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "active")
	swap := filepath.Join(dir, SwapName("active"))
	if err := Write(File{Path: p, Data: []byte("first\n"), Swap: true}); err != nil {
		t.Fatal(err)
	}
	if got := readOr(t, p); got != "first\n" {
		t.Fatalf("after the first write: %q", got)
	}
	if _, err := os.Lstat(swap); !os.IsNotExist(err) {
		t.Errorf("a swap file after replacing nothing: %v", err)
	}
	if err := Write(File{Path: p, Data: []byte("second, longer\n"), Perm: 0o600, Swap: true}); err != nil {
		t.Fatal(err)
	}
	if got, old := readOr(t, p), readOr(t, swap); got != "second, longer\n" || old != "first\n" {
		t.Fatalf("after the second write: target %q, swap file %q; want the new and the old content", got, old)
	}
	swapIno := inode(t, swap)
	if err := Write(File{Path: p, Data: []byte("3\n"), Perm: 0o640, Swap: true}); err != nil {
		t.Fatal(err)
	}
	if got, old := readOr(t, p), readOr(t, swap); got != "3\n" || old != "second, longer\n" {
		t.Errorf("after the third write: target %q, swap file %q", got, old)
	}
	if ino := inode(t, p); ino != swapIno {
		t.Errorf("the third write made a new file (inode %d), not the swap file's (%d)", ino, swapIno)
	}
	if st, err := os.Stat(p); err != nil || st.Mode().Perm() != 0o640 {
		t.Errorf("mode after the third write: %v, %v; want 0640", st.Mode(), err)
	}
	noTemps(t, dir)
}

// TestSwapLeavesUnfitSwapFilesAlone: a swap file that is a hard link to
// another file, a symbolic link, a FIFO or another user's file is not
// written into; a new one takes its place.
func TestSwapLeavesUnfitSwapFilesAlone(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(dir, "victim")
	write := func(name string) {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("old\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := Write(File{Path: p, Data: []byte("new " + name + "\n"), Swap: true}); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if got := readOr(t, p); got != "new "+name+"\n" {
			t.Errorf("%s: %q", name, got)
		}
	}
	if err := os.WriteFile(victim, []byte("keep\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(victim, filepath.Join(dir, SwapName("hardlinked"))); err != nil {
		t.Fatal(err)
	}
	write("hardlinked")
	if err := os.Symlink(victim, filepath.Join(dir, SwapName("symlinked"))); err != nil {
		t.Fatal(err)
	}
	write("symlinked")
	if got := readOr(t, victim); got != "keep\n" {
		t.Errorf("the file a swap file was linked to was written: %q", got)
	}
	if err := unix.Mkfifo(filepath.Join(dir, SwapName("fifo")), 0o600); err != nil {
		t.Fatal(err)
	}
	write("fifo")
	if os.Geteuid() == 0 {
		other := filepath.Join(dir, SwapName("other"))
		if err := os.WriteFile(other, []byte("theirs\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(other, 12345, 12345); err != nil {
			t.Fatal(err)
		}
		write("other")
		st, err := os.Stat(filepath.Join(dir, "other"))
		if err != nil {
			t.Fatal(err)
		}
		if uid := st.Sys().(*syscall.Stat_t).Uid; uid != 0 {
			t.Errorf("another user's swap file became the target (owner %d)", uid)
		}
	}
	noTemps(t, dir)
}

// TestSwapSameTargetTwice: of two files for one target in a batch (a
// switch's guessed mount record and the real one), the later one ends up
// there, with Swap too.
func TestSwapSameTargetTwice(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "usr.json")
	for i := range 3 { // no swap file, a new one, a reused one
		b := Begin(File{Path: p, Data: []byte("guess\n"), Swap: true})
		b.Add(File{Path: p, Data: []byte("actual, longer\n"), Swap: true})
		if err := b.Commit(); err != nil {
			t.Fatal(err)
		}
		if got := readOr(t, p); got != "actual, longer\n" {
			t.Errorf("round %d: %q", i, got)
		}
		noTemps(t, dir)
	}
}

// TestSwapAbortChangesNothing: an aborted batch with Swap files leaves
// the targets as they were.
func TestSwapAbortChangesNothing(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "active")
	for i := range 3 {
		if err := Write(File{Path: p, Data: []byte("kept\n"), Swap: true}); err != nil {
			t.Fatal(err)
		}
		b := Begin(File{Path: p, Data: []byte("dropped\n"), Swap: true})
		b.Abort()
		if got := readOr(t, p); got != "kept\n" {
			t.Errorf("round %d: %q after Abort", i, got)
		}
	}
	noTemps(t, dir)
}

// TestSwapConcurrentWriters: writers of one file that do not hold a common
// lock (mossfs bls beside a switch, both writing loader.conf) never mix
// their contents: whoever finds the swap file in use takes a temporary
// file, and the file ends up whole, as one of them wrote it.
func TestSwapConcurrentWriters(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "loader.conf")
	contents := map[string]bool{}
	var all []string
	for w := range 6 {
		c := strings.Repeat(strconv.Itoa(w), 1+w*37) + "\n"
		contents[c] = true
		all = append(all, c)
	}
	for round := range 30 {
		var wg sync.WaitGroup
		errs := make([]error, len(all))
		for w, c := range all {
			wg.Go(func() {
				for range 3 {
					if err := Write(File{Path: p, Data: []byte(c), Swap: true}); err != nil {
						errs[w] = err
					}
				}
			})
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		if got := readOr(t, p); !contents[got] {
			t.Fatalf("round %d: the file holds %q, which no writer wrote", round, got)
		}
	}
	noTemps(t, dir)
}
