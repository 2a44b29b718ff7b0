package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/mossfs/mossfs/internal/testenv"
)

// TestComposeNotRootNeedsSkipTriggers: a user who is not root cannot run
// transaction triggers (containers need root), so compose refuses unless
// told --skip-triggers, and then composes.
func TestComposeNotRootNeedsSkipTriggers(t *testing.T) {
	nobody := testenv.Nobody(t)
	uid, gid := nobody.Uid, nobody.Gid
	base := testenv.WorldDir(t, "mossfs-trig-cli-")
	bin := filepath.Join(base, "moss-compose")
	data, err := os.ReadFile(mossCompose(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	work := filepath.Join(base, "work")
	if err := os.MkdirAll(filepath.Join(work, "tree", "share"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(work, "tree", "share", "f"), []byte("f\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{base, work, filepath.Join(work, "tree"), filepath.Join(work, "tree", "share"), filepath.Join(work, "tree", "share", "f")} {
		if err := os.Chown(p, int(uid), int(gid)); err != nil {
			t.Fatal(err)
		}
	}
	asNobody := func(args ...string) (string, error) {
		cmd := exec.Command(bin, args...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}}
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	root := filepath.Join(work, "state")
	out, err := asNobody("compose", "-q", "--root", root, "--tree", filepath.Join(work, "tree"))
	if err == nil || !strings.Contains(out, "--skip-triggers") {
		t.Fatalf("compose as nobody without --skip-triggers: %v\n%s", err, out)
	}
	if ents, _ := os.ReadDir(filepath.Join(root, "transactions")); len(ents) > 1 {
		t.Errorf("the refused compose left %d entries in transactions/", len(ents))
	}
	if out, err := asNobody("compose", "-q", "--skip-triggers", "--root", root, "--tree", filepath.Join(work, "tree")); err != nil || strings.TrimSpace(out) != "1" {
		t.Fatalf("compose as nobody with --skip-triggers: %v\n%s", err, out)
	}
}
