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
)

// TestStateListAsOtherUser: after a compose by root, `state list` works for
// the user nobody (it reads only the public records), `state show` (which
// reads a transaction's private inputs) is refused, and `verify` finds
// nothing others can reach.
func TestStateListAsOtherUser(t *testing.T) {
	nobody := testenv.Nobody(t)
	uid, gid := nobody.Uid, nobody.Gid
	base := testenv.WorldDir(t, "mossfs-perm-cli-")
	bin := filepath.Join(base, "moss-compose")
	data, err := os.ReadFile(mossCompose(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(base, "moss")
	stone := testenv.SharedPath(t, "testdata", "stones", "bash-completion-2.11-1-1-x86_64.stone")
	mc(t, true, "compose", "-q", "--root", root, "--stone", stone)
	asNobody := func(args ...string) (string, string, error) {
		cmd := exec.Command(bin, args...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}}
		var stdout, stderr strings.Builder
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		return stdout.String(), stderr.String(), err
	}
	out, errOut, err := asNobody("state", "list", "--root", root, "--json")
	if err != nil {
		t.Fatalf("state list as nobody: %v\n%s", err, errOut)
	}
	var list []struct {
		ID     uint64 `json:"id"`
		Inputs []struct {
			Name string `json:"name"`
		} `json:"inputs"`
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil || len(list) != 1 || list[0].ID != 1 || len(list[0].Inputs) != 1 || list[0].Inputs[0].Name != "bash-completion" {
		t.Errorf("state list as nobody: %v\n%s", err, out)
	}
	if _, errOut, err := asNobody("state", "show", "1", "--root", root, "--owner", "/share/bash-completion/completions/7z"); err == nil {
		t.Error("state show --owner as nobody read the private inputs")
	} else {
		t.Logf("state show as nobody: %s", strings.TrimSpace(errOut))
	}
	if out := mc(t, true, "verify", "--root", root, "-q"); strings.Contains(out, "reachable by other users") {
		t.Errorf("verify: %s", out)
	}
}
