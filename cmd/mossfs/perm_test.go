package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/mossfs/mossfs/internal/testenv"

	"github.com/mossfs/mossfs/internal/mountrec"
	"github.com/mossfs/mossfs/internal/state"
)

// TestStatusAsOtherUser: `mossfs status` by the user nobody on root's state
// root reads the active transaction (a public record) and shows no mount
// record (they are private), without failing; root sees the record.
func TestStatusAsOtherUser(t *testing.T) {
	nobody := testenv.Nobody(t)
	uid, gid := nobody.Uid, nobody.Gid
	base := testenv.WorldDir(t, "mossfs-perm-status-")
	bin := filepath.Join(base, "mossfs")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	root := filepath.Join(base, "moss")
	st, err := state.Create(root)
	if err != nil {
		t.Fatal(err)
	}
	meta, _ := json.Marshal(map[string]any{"id": 7, "image": strings.Repeat("a", 64), "time": "2026-01-01T00:00:00Z"})
	if err := os.WriteFile(filepath.Join(root, "transactions", "7.json"), meta, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := st.SetActive(7); err != nil {
		t.Fatal(err)
	}
	if err := mountrec.Write(root, mountrec.Record{Target: "/nowhere", Tx: 7, Driver: "overlay"}); err != nil {
		t.Fatal(err)
	}
	statusAs := func(cred *syscall.Credential) statusReport {
		t.Helper()
		cmd := exec.Command(bin, "status", "--root", root, "--json")
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("mossfs status as %v: %v\n%s", cred, err, stderr.String())
		}
		var rep statusReport
		if err := json.Unmarshal(out, &rep); err != nil {
			t.Fatalf("status --json: %v\n%s", err, out)
		}
		return rep
	}
	recorded := func(rep statusReport) bool {
		for _, m := range rep.Mounts {
			if m.Target == "/nowhere" && m.Recorded {
				return true
			}
		}
		return false
	}
	if rep := statusAs(nil); rep.Active != 7 || !recorded(rep) {
		t.Errorf("status as root: %+v", rep)
	}
	if rep := statusAs(&syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}); rep.Active != 7 || recorded(rep) {
		t.Errorf("status as nobody: %+v (want active 7 and no private mount record)", rep)
	}
}
