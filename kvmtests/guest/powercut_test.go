package guest

import (
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/mossfs/mossfs/fsverity"
	"golang.org/x/sys/unix"
)

// Power-cut trials: the host boots the VM several times on one disk. Each
// boot but the first checks the state left by the previous one
// (TestPowerCutCheck); each boot but the last composes transactions in a
// loop (TestPowerCutCompose) until the host kills QEMU in the middle of a
// compose. Markers on stdout (the results port) tell the host where the
// guest is: POWERCUT-COMPOSING <n> before a compose, POWERCUT-COMPOSED <id>
// once it returned (the transaction is then durable).

func powercutState(disk string) string { return filepath.Join(disk, "pc", ".moss") }

func TestPowerCutCompose(t *testing.T) {
	disk := inGuest(t)
	if os.Getenv("MOSSFS_KVM_POWERCUT") != "compose" {
		t.Skip("power-cut compose loop runs only in the power-cut boots")
	}
	st := powercutState(disk)
	os.MkdirAll(filepath.Dir(st), 0o755)
	seed := uint64(os.Getpid())
	if b, err := os.ReadFile("/proc/sys/kernel/random/boot_id"); err == nil {
		seed = binary.LittleEndian.Uint64([]byte(strings.ReplaceAll(string(b), "-", "")[:8]))
	}
	rng := rand.New(rand.NewPCG(seed, 1))
	var from uint64
	for n := 1; ; n++ {
		// New content every round, so every compose writes objects.
		src := filepath.Join(disk, "pc", fmt.Sprintf("src-%d-%d", seed%1000, n))
		for i := range 120 {
			dir := filepath.Join(src, fmt.Sprintf("d%02d", i%12))
			os.MkdirAll(dir, 0o755)
			data := make([]byte, 1024+rng.IntN(12*1024))
			for j := range data {
				data[j] = byte(rng.Uint32())
			}
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%03d", i)), data, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		args := []string{"compose", "--root", st, "--tree", src + ":/t" + strconv.Itoa(n), "-q", "--json"}
		if from != 0 {
			args = append(args, "--from", strconv.FormatUint(from, 10))
		}
		fmt.Printf("POWERCUT-COMPOSING %d\n", n)
		out, err := exec.Command("/bin/moss-compose", args...).Output()
		if err != nil {
			t.Fatalf("compose %d: %v\n%s", n, err, out)
		}
		var res struct {
			Transaction struct {
				ID uint64 `json:"id"`
			} `json:"transaction"`
		}
		if err := json.Unmarshal(out, &res); err != nil || res.Transaction.ID == 0 {
			t.Fatalf("compose %d: %v %q", n, err, out)
		}
		from = res.Transaction.ID
		fmt.Printf("POWERCUT-COMPOSED %d\n", from)
	}
}

func TestPowerCutCheck(t *testing.T) {
	disk := inGuest(t)
	if os.Getenv("MOSSFS_KVM_POWERCUT_CHECK") != "1" {
		t.Skip("power-cut check runs only after a power cut")
	}
	st := powercutState(disk)
	var expect []uint64
	if b, err := os.ReadFile("/kvmtest-expect"); err == nil {
		for _, f := range strings.Fields(string(b)) {
			id, _ := strconv.ParseUint(f, 10, 64)
			expect = append(expect, id)
		}
	}
	list := func() []uint64 {
		out, err := exec.Command("/bin/moss-compose", "state", "list", "--root", st, "--json").Output()
		if err != nil {
			t.Fatalf("state list after the power cut: %v\n%s", err, out)
		}
		var txs []struct {
			ID    uint64 `json:"id"`
			Image string `json:"image"`
		}
		if err := json.Unmarshal(out, &txs); err != nil {
			t.Fatalf("state list --json: %v", err)
		}
		var ids []uint64
		for _, tx := range txs {
			ids = append(ids, tx.ID)
			checkImage(t, st, tx.ID, tx.Image)
		}
		return ids
	}
	ids := list()
	t.Logf("transactions after the cut: %v (durable before it: %v)", ids, expect)
	for _, id := range expect {
		if !slices.Contains(ids, id) {
			t.Errorf("transaction %d was composed (compose returned) before the power cut but is not listed", id)
		}
	}
	verify := func(when string) {
		out, err := exec.Command("/bin/moss-compose", "verify", "--root", st, "-q").CombinedOutput()
		if err != nil {
			t.Errorf("verify %s: %v\n%s", when, err, out)
		}
	}
	verify("after the power cut")
	out, err := exec.Command("/bin/moss-compose", "gc", "--root", st, "-q", "--json").CombinedOutput()
	if err != nil {
		t.Errorf("gc after the power cut: %v\n%s", err, out)
	}
	t.Logf("gc after the cut (what the interrupted compose left behind):\n%s", out)
	verify("after gc")
	if after := list(); !slices.Equal(after, ids) {
		t.Errorf("gc changed the transactions: %v → %v", ids, after)
	}
}

// checkImage: a listed transaction is complete — its image hashes to its
// name and mounts as EROFS with the right .stateID.
func checkImage(t *testing.T, st string, id uint64, image string) {
	t.Helper()
	p := filepath.Join(st, "images", image)
	d, err := fsverity.DigestFile(p)
	if err != nil {
		t.Errorf("transaction %d: image: %v", id, err)
		return
	}
	if hex.EncodeToString(d[:]) != image {
		t.Errorf("transaction %d: image %s hashes to %x", id, p, d)
		return
	}
	mnt := filepath.Join("/mnt", "pc-img")
	os.MkdirAll(mnt, 0o755)
	if err := unix.Mount(p, mnt, "erofs", unix.MS_RDONLY, ""); err != nil {
		t.Errorf("transaction %d: mount image: %v", id, err)
		return
	}
	defer unix.Unmount(mnt, 0)
	b, err := os.ReadFile(filepath.Join(mnt, ".stateID"))
	if err != nil || strings.TrimSpace(string(b)) != strconv.FormatUint(id, 10) {
		t.Errorf("transaction %d: .stateID %q %v", id, b, err)
	}
}
