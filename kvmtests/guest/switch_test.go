package guest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestLiveSwitch switches a mounted /usr between transactions with mossfs
// switch while readers loop over it: every read succeeds and sees one whole
// transaction, a file held open keeps reading the old one, the new one is
// seen after each switch, and --pubkey refuses a wrongly signed transaction
// without touching the mount.
func TestLiveSwitch(t *testing.T) {
	disk := inGuest(t)
	st := filepath.Join(disk, "live", ".moss")
	src := filepath.Join(disk, "livesrc")
	os.MkdirAll(filepath.Join(src, "share"), 0o755)
	big := pattern(256<<10, 9)
	for i := 1; i <= 2; i++ {
		os.WriteFile(filepath.Join(src, "release"), []byte(fmt.Sprintf("release %d\n", i)), 0o644)
		os.WriteFile(filepath.Join(src, "share", "big.bin"), append([]byte{byte(i)}, big...), 0o644)
		args := []string{"compose", "--root", st, "--tree", src, "-q"}
		if i > 1 {
			args = append(args, "--from", "1")
		}
		run(t, "/bin/moss-compose", args...)
	}
	key := filepath.Join(disk, "livekey")
	run(t, "/bin/moss-compose", "keygen", key)
	run(t, "/bin/moss-compose", "state", "sign", "--root", st, "--key", key, "1")

	// Beneath a tmpfs: a target whose parent is the initramfs rootfs cannot be tucked.
	base := filepath.Join("/mnt", "live")
	os.MkdirAll(base, 0o755)
	if err := unix.Mount("tmpfs", base, "tmpfs", 0, ""); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(base, unix.MNT_DETACH)
	target := filepath.Join(base, "usr")
	os.MkdirAll(target, 0o755)
	mossfs := func(args ...string) (string, error) {
		out, err := exec.Command("/bin/mossfs", append(args, "--root", st)...).CombinedOutput()
		return string(out), err
	}
	if out, err := mossfs("switch", "1", "--target", target); err != nil {
		t.Fatalf("first switch: %v\n%s", err, out)
	}
	defer func() {
		for isMountPoint(t, target) {
			if err := unix.Unmount(target, unix.MNT_DETACH); err != nil {
				break
			}
		}
	}()

	// A file held open across switches keeps its transaction.
	held, err := os.Open(filepath.Join(target, "share", "big.bin"))
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()

	var stop atomic.Bool
	var reads, errs atomic.Int64
	var seen [3]atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for r := 0; r < 3; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				rel, err1 := os.ReadFile(filepath.Join(target, "release"))
				data, err2 := os.ReadFile(filepath.Join(target, "share", "big.bin"))
				reads.Add(1)
				if err1 != nil || err2 != nil {
					errs.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Sprint(err1, err2))
					continue
				}
				n, _ := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(string(rel), "release ")))
				if (n != 1 && n != 2) || len(data) != len(big)+1 || !bytes.Equal(data[1:], big) {
					errs.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Sprintf("release %q, big.bin %d bytes", rel, len(data)))
					continue
				}
				seen[n].Add(1)
			}
		}()
	}
	want := 1
	for i := 0; i < 6; i++ {
		time.Sleep(150 * time.Millisecond)
		want = 3 - want
		start := time.Now()
		if out, err := mossfs("switch", strconv.Itoa(want), "--target", target); err != nil {
			stop.Store(true)
			wg.Wait()
			t.Fatalf("switch to %d: %v\n%s", want, err, out)
		}
		t.Logf("switch to %d took %v (%d reads so far)", want, time.Since(start).Round(time.Millisecond), reads.Load())
		if rel, err := os.ReadFile(filepath.Join(target, "release")); err != nil || string(rel) != fmt.Sprintf("release %d\n", want) {
			t.Errorf("after switch to %d: release %q %v", want, rel, err)
		}
	}
	time.Sleep(150 * time.Millisecond)
	stop.Store(true)
	wg.Wait()
	t.Logf("%d reads during 6 switches: %d saw 1, %d saw 2, %d failed", reads.Load(), seen[1].Load(), seen[2].Load(), errs.Load())
	if errs.Load() != 0 {
		t.Errorf("%d reads failed during live switches, first: %v", errs.Load(), firstErr.Load())
	}
	if seen[1].Load() == 0 || seen[2].Load() == 0 {
		t.Errorf("readers did not see both transactions")
	}
	first := make([]byte, 1)
	if _, err := held.ReadAt(first, 0); err != nil || first[0] != 1 {
		t.Errorf("file held open since transaction 1 reads %v, %v; want transaction 1's content", first, err)
	}
	// One mount at the target, not a pile.
	n := 0
	data, _ := os.ReadFile("/proc/self/mountinfo")
	for _, l := range strings.Split(string(data), "\n") {
		if f := strings.Fields(l); len(f) > 4 && f[4] == target {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d mounts stacked at %s after the switches, want 1", n, target)
	}

	// --pubkey: 2 is unsigned; the switch is refused and 2 stays mounted.
	out, err := mossfs("switch", "1", "--target", target, "--pubkey", key+".pub")
	if err != nil {
		t.Fatalf("signed switch to 1: %v\n%s", err, out)
	}
	out, err = mossfs("switch", "2", "--target", target, "--pubkey", key+".pub")
	if err == nil {
		t.Errorf("switch to unsigned transaction 2 with --pubkey succeeded:\n%s", out)
	}
	if rel, _ := os.ReadFile(filepath.Join(target, "release")); string(rel) != "release 1\n" {
		t.Errorf("after the refused switch: release %q, want 1", rel)
	}
	var status any
	if out, err := exec.Command("/bin/mossfs", "status", "--root", st, "--json").Output(); err == nil {
		json.Unmarshal(out, &status)
		t.Logf("mossfs status: %v", status)
	}
}
