package adopt

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/mossfs/mossfs/internal/state"
	"github.com/mossfs/mossfs/internal/testenv"
)

var (
	cliOnce sync.Once
	cliBin  string
	cliErr  error
)

// mossCompose builds the moss-compose command once per test binary
// (statically, as make build does), with moss-oci beside it: "moss-compose
// adopt" runs "moss-oci adopt", the program that links SQLite.
func mossCompose(t *testing.T) string {
	t.Helper()
	cliOnce.Do(func() {
		dir, err := os.MkdirTemp("", "adopt-cli-")
		if err != nil {
			cliErr = err
			return
		}
		cliBin = filepath.Join(dir, "moss-compose")
		cmd := exec.Command("go", "build", "-o", dir+"/", "github.com/mossfs/mossfs/cmd/moss-compose", "github.com/mossfs/mossfs/cmd/moss-oci")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			cliErr = &exec.ExitError{Stderr: out}
		}
	})
	if cliErr != nil {
		t.Fatalf("go build moss-compose moss-oci: %v %s", cliErr, cliErr.(*exec.ExitError).Stderr)
	}
	return cliBin
}

func cli(t *testing.T, wantOK bool, args ...string) (stdout, stderr string) {
	t.Helper()
	cmd := exec.Command(mossCompose(t), args...)
	var o, e strings.Builder
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	if (err == nil) != wantOK {
		t.Fatalf("moss-compose %s: %v, want ok=%v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, wantOK, o.String(), e.String())
	}
	return o.String(), e.String()
}

// TestAdoptCommand runs moss-compose adopt as a user would: every state
// with --json (one JSON value on stdout), again as a no-op, an unknown
// state, a native compose refused without --id and accepted with it, and
// --follow with a BLS directory.
func TestAdoptCommand(t *testing.T) {
	inst := testInstall(t)
	root := t.TempDir()
	inst.write(t, root)
	sr := filepath.Join(t.TempDir(), "state")
	var out struct {
		Results []struct {
			State     uint64 `json:"state"`
			Unchanged bool   `json:"unchanged"`
			Tx        struct {
				ID     uint64 `json:"id"`
				Inputs []struct {
					Name    string `json:"name"`
					Package string `json:"package_id"`
				} `json:"inputs"`
			} `json:"transaction"`
			Transfer Transfer `json:"transfer"`
			Extras   []Extra  `json:"extras"`
		} `json:"results"`
		BootDefault []string `json:"boot_default"`
	}
	stdout, _ := cli(t, true, "adopt", "--root", sr, "--moss-root", root, "--all", "--json")
	if err := json.Unmarshal([]byte(stdout), &out); err != nil {
		t.Fatalf("--json output: %v\n%s", err, stdout)
	}
	if len(out.Results) != 3 {
		t.Fatalf("%d results, want 3:\n%s", len(out.Results), stdout)
	}
	for i, r := range out.Results {
		if r.State != uint64(i+1) || r.Tx.ID != r.State || r.Unchanged || len(r.Tx.Inputs) < len(inst.states[i]) || r.Tx.Inputs[0].Package != baselayout.id {
			t.Errorf("result %d: %+v", i, r)
		}
	}
	if len(out.Results[1].Extras) == 0 || out.Results[0].Transfer.CopiedFiles == 0 {
		t.Errorf("state 2 lists no extras or state 1 copied nothing: %+v", out.Results)
	}

	stdout, stderr := cli(t, true, "adopt", "--root", sr, "--moss-root", root, "--state", "1")
	if strings.TrimSpace(stdout) != "1" || !strings.Contains(stderr, "selection unchanged") {
		t.Errorf("re-adopt: stdout %q stderr %q", stdout, stderr)
	}
	_, stderr = cli(t, false, "adopt", "--root", sr, "--moss-root", root, "--state", "9")
	if !strings.Contains(stderr, "moss state 9 does not exist") {
		t.Errorf("unknown state: %s", stderr)
	}
	pine := filepath.Join(stonesDir(t), "pineapple-1-1-1-x86_64.stone")
	_, stderr = cli(t, false, "compose", "--root", sr, "--from", "3", "--stone", pine)
	if !strings.Contains(stderr, "--id") {
		t.Errorf("native compose in a following root: %s", stderr)
	}
	stdout, _ = cli(t, true, "compose", "--root", sr, "--from", "3", "--stone", pine, "--id", "100")
	if strings.TrimSpace(stdout) != "100" {
		t.Errorf("compose --id 100 printed %q", stdout)
	}

	entries := filepath.Join(t.TempDir(), "loader", "entries")
	os.MkdirAll(entries, 0o755)
	os.WriteFile(filepath.Join(entries, "mossfs-2.conf"), []byte("title mossfs\nlinux /vmlinuz\noptions quiet moss.tx=2\n"), 0o644)
	stdout, _ = cli(t, true, "adopt", "--root", sr, "--moss-root", root, "--follow", "--bls-dir", entries, "--json")
	out.BootDefault = nil
	if err := json.Unmarshal([]byte(stdout), &out); err != nil {
		t.Fatalf("--follow --json: %v\n%s", err, stdout)
	}
	if len(out.Results) != 1 || out.Results[0].State != 3 || !out.Results[0].Unchanged || len(out.BootDefault) != 1 {
		t.Fatalf("--follow: %s", stdout)
	}
	conf, _ := os.ReadFile(filepath.Join(filepath.Dir(entries), "loader.conf"))
	if !strings.Contains(string(conf), "default mossfs-3.conf") {
		t.Fatalf("loader.conf after --follow:\n%s", conf)
	}
}

// TestAdoptRunsTransactionTriggers: a state whose package ships a
// transaction trigger (moss's tx.d format) and its handler (a static
// busybox) gets the trigger's output in its image, as moss's own blit
// would have, with no archived tree to take it from.
func TestAdoptRunsTransactionTriggers(t *testing.T) {
	testenv.RequireMountNS(t)
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("no /bin/busybox (busybox-static; make test installs it)")
		}
		t.Skip("no /bin/busybox")
	}
	trigger := `name: stamp
description: writes a stamp listing what it matched
handlers:
  stamp:
    run: /usr/bin/busybox
    args: ["sh", "-c", "echo stamped $(item) > /usr/share/stamp"]
paths:
  "/usr/share/stampme/(item:*)":
    handlers: [stamp]
`
	p := genPkg("stamper",
		reg("bin/busybox", 0o755, string(bb)),
		reg("share/moss/triggers/tx.d/stamp.yaml", 0o644, trigger),
		reg("share/stampme/one", 0o644, "x\n"))
	inst := &tInstall{pkgs: []tPkg{baselayout, p}, states: [][]string{{baselayout.id, p.id}}}
	root := t.TempDir()
	inst.write(t, root)
	sr := filepath.Join(t.TempDir(), "state")
	cli(t, true, "adopt", "--root", sr, "--moss-root", root, "--state", "1")
	s, err := state.Open(sr)
	if err != nil {
		t.Fatal(err)
	}
	tx, err := s.Get(1)
	if err != nil {
		t.Fatal(err)
	}
	if len(tx.Triggers) != 1 || tx.Triggers[0].Name != "stamp" || !tx.Triggers[0].Ran {
		t.Fatalf("triggers recorded: %+v", tx.Triggers)
	}
	got, err := os.ReadFile(filepath.Join(mountTx(t, s, tx), "share", "stamp"))
	if err != nil || string(got) != "stamped one\n" {
		t.Fatalf("trigger output in the image: %q, %v", got, err)
	}
}
