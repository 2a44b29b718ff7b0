package state

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/mossfs/mossfs/cas"
	"github.com/mossfs/mossfs/internal/durable"
	"github.com/mossfs/mossfs/internal/stone"
	"github.com/mossfs/mossfs/internal/testenv"
)

// probeEnv makes the test binary a probe: run as another user, it tries to
// stat, list and read every path given on stdin and prints what worked.
const probeEnv = "MOSSFS_TEST_PERM_PROBE"

func init() {
	if os.Getenv(probeEnv) == "" {
		return
	}
	runProbe(os.Getenv(probeEnv))
	os.Exit(0)
}

// probeResult is what one user could do with one path.
type probeResult struct {
	Path  string `json:"path"`
	Stat  bool   `json:"stat,omitempty"`
	List  bool   `json:"list,omitempty"`
	Read  bool   `json:"read,omitempty"`
	Error string `json:"error,omitempty"` // of the first refused attempt
}

// runProbe reads paths from stdin and writes one probeResult per line; then
// opens the state root as records-only reader and prints the transaction ids
// and the active one ("records: ..."), as `moss-compose state list` does.
func runProbe(stateRoot string) {
	enc := json.NewEncoder(os.Stdout)
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		p := sc.Text()
		r := probeResult{Path: p}
		fi, err := os.Lstat(p)
		if err == nil {
			r.Stat = true
			if fi.IsDir() {
				_, err = os.ReadDir(p)
				r.List = err == nil
			} else if fi.Mode().IsRegular() {
				var f *os.File
				if f, err = os.Open(p); err == nil {
					_, err = f.Read(make([]byte, 1))
					if err == io.EOF {
						err = nil
					}
					r.Read = err == nil
					f.Close()
				}
			}
		}
		if err != nil {
			r.Error = err.Error()
		}
		enc.Encode(r)
	}
	s, err := OpenRecords(stateRoot)
	if err != nil {
		enc.Encode(map[string]string{"records_error": err.Error()})
		return
	}
	ids, err := s.IDs()
	active, aerr := s.Active()
	txs, lerr := s.List()
	enc.Encode(map[string]any{"ids": ids, "active": active, "listed": len(txs), "errors": errors.Join(err, aerr, lerr)})
}

// TestOthersReadOnlyPublicRecords composes a tree with 0600 files in 0700
// directories and a stone package, records a mount and a pin, and then,
// as the user nobody, tries to stat, list and read everything under the
// state root. Only PublicRecords may be read and only the state root and
// transactions/ listed (their entries can be stat'ed: that needs only the
// directory's search permission). A world-readable file beside the store,
// read by the same user in the same run, shows that the directories above
// the store let that user in.
func TestOthersReadOnlyPublicRecords(t *testing.T) {
	cred := testenv.Nobody(t)
	// Not under t.TempDir (0700): a dedicated directory others may enter.
	base := testenv.WorldDir(t, "mossfs-perm-")
	control := filepath.Join(base, "control.txt")
	must(t, os.WriteFile(control, []byte("readable by all\n"), 0o644))
	must(t, os.Chmod(control, 0o644))

	src := filepath.Join(base, "src")
	secret := strings.Repeat("-----BEGIN PRIVATE KEY-----\n", 8)
	for _, d := range []string{"etc/ssh", "home/alice"} {
		must(t, os.MkdirAll(filepath.Join(src, d), 0o755))
	}
	must(t, os.Chmod(filepath.Join(src, "etc/ssh"), 0o700))
	must(t, os.Chmod(filepath.Join(src, "home/alice"), 0o700))
	must(t, os.WriteFile(filepath.Join(src, "etc/ssh/ssh_host_ed25519_key"), []byte(secret), 0o600))
	must(t, os.WriteFile(filepath.Join(src, "home/alice/notes"), []byte("short secret\n"), 0o600))
	must(t, os.WriteFile(filepath.Join(src, "etc/motd"), []byte(strings.Repeat("public\n", 20)), 0o644))

	root := filepath.Join(base, "moss")
	s, err := Create(root)
	if err != nil {
		t.Fatal(err)
	}
	im, err := s.NewImporter(stone.Format{})
	if err != nil {
		t.Fatal(err)
	}
	fr, err := im.Tree(context.Background(), src, "")
	if err != nil {
		t.Fatal(err)
	}
	tx := compose(t, s, ComposeOptions{Add: []Fragment{fr}})
	st, err := im.Stone(context.Background(), testenv.SharedPath(t, "testdata", "stones", "bash-completion-2.11-1-1-x86_64.stone"))
	if err != nil {
		t.Fatal(err)
	}
	must(t, im.Sync())
	must(t, im.Close())
	tx2 := compose(t, s, ComposeOptions{From: tx.ID, Add: []Fragment{st}})
	must(t, s.SetActive(tx2.ID))
	must(t, s.WriteMount(MountRecord{Tx: tx2.ID, Target: "/usr"}))
	must(t, s.Pin("keep", strconv.FormatUint(tx.ID, 10)))
	if _, err := s.Verify(VerifyOptions{}); err != nil {
		t.Fatal(err)
	}

	var paths []string
	must(t, filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		paths = append(paths, p)
		return err
	}))
	paths = append(paths, base, control)

	// The probe is this test binary, copied where nobody may run it.
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	probe := filepath.Join(base, "probe")
	data, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	must(t, os.WriteFile(probe, data, 0o755))
	cmd := exec.Command(probe)
	cmd.Env = append(os.Environ(), probeEnv+"="+root)
	cmd.Stdin = strings.NewReader(strings.Join(paths, "\n") + "\n")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("probe as uid %d: %v\n%s", cred.Uid, err, stderr.Bytes())
	}

	results := map[string]probeResult{}
	lines := bytes.Split(bytes.TrimSpace(out), []byte("\n"))
	for _, l := range lines[:len(lines)-1] {
		var r probeResult
		must(t, json.Unmarshal(l, &r))
		results[r.Path] = r
	}
	if len(results) != len(paths) {
		t.Fatalf("probe reported %d paths, want %d", len(results), len(paths))
	}
	// Positive controls: the user can enter the directories above the
	// store and read a world-readable file there.
	if r := results[control]; !r.Read {
		t.Fatalf("positive control: uid %d cannot read %s (%s): the test proves nothing", cred.Uid, control, r.Error)
	}
	if r := results[base]; !r.List {
		t.Fatalf("positive control: uid %d cannot list %s (%s)", cred.Uid, base, r.Error)
	}
	txJSON := 0
	for _, p := range paths {
		if p == base || p == control {
			continue
		}
		r := results[p]
		rel, _ := filepath.Rel(root, p)
		rel = filepath.ToSlash(rel)
		parent := filepath.ToSlash(filepath.Dir(rel))
		mayStat := rel == "." || parent == "." || parent == "transactions"
		mayList := rel == "." || rel == "transactions"
		mayRead := IsPublic(rel) && !mayList
		if r.Stat && !mayStat || r.List && !mayList || r.Read && !mayRead {
			t.Errorf("uid %d can %s %s", cred.Uid, what(r), rel)
		}
		if mayRead && !r.Read || mayList && !r.List {
			t.Errorf("uid %d cannot read or list %s, a public record: %s", cred.Uid, rel, r.Error)
		}
		if r.Read && strings.HasPrefix(rel, "transactions/") {
			txJSON++
		}
	}
	if txJSON != 2 {
		t.Errorf("uid %d read %d transaction records, want 2", cred.Uid, txJSON)
	}
	var records struct {
		IDs    []uint64 `json:"ids"`
		Active uint64   `json:"active"`
		Listed int      `json:"listed"`
		Errors any      `json:"errors"`
		Err    string   `json:"records_error"`
	}
	must(t, json.Unmarshal(lines[len(lines)-1], &records))
	if records.Err != "" || records.Errors != nil || !slices.Equal(records.IDs, []uint64{tx.ID, tx2.ID}) || records.Active != tx2.ID || records.Listed != 2 {
		t.Errorf("uid %d reading the public records: %s", cred.Uid, lines[len(lines)-1])
	}
	t.Logf("%d paths under the state root probed as uid %d", len(paths)-2, cred.Uid)
}

func what(r probeResult) string {
	var w []string
	if r.Stat {
		w = append(w, "stat")
	}
	if r.List {
		w = append(w, "list")
	}
	if r.Read {
		w = append(w, "read")
	}
	return strings.Join(w, "+")
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestOpenTightensOlderStore: a state root made with world-readable
// directories (as before) is made private when its owner opens it, with one
// line saying so, and verify reports it; what stays exposed fails verify.
func TestOpenTightensOlderStore(t *testing.T) {
	s := newState(t)
	compose(t, s, ComposeOptions{Add: []Fragment{frag(t, s, pkg("a", "1"), file{path: "f", content: big("x")})}})
	root := s.Root()
	loose := []string{"cas", "images", "mounts", "pins", "transactions/1.inputs", "transactions/next", "cas/objects", "lock"}
	for _, p := range loose {
		mode := os.FileMode(0o755)
		if p == "transactions/next" || p == "lock" {
			mode = 0o644
		}
		must(t, os.Chmod(filepath.Join(root, p), mode))
	}
	// moss's own entries beside ours are left as moss made them.
	for _, d := range []string{"assets", "db", "root", "cache"} {
		must(t, os.Mkdir(filepath.Join(root, d), 0o755))
	}
	must(t, os.WriteFile(filepath.Join(root, ".moss-lockfile"), nil, 0o644))
	exposed, err := Exposed(root)
	must(t, err)
	if len(exposed) != len(loose) {
		t.Fatalf("Exposed found %q, want %d entries (%q)", exposed, len(loose), loose)
	}
	var warn bytes.Buffer
	old := Warnings
	Warnings = &warn
	defer func() { Warnings = old }()
	s2, err := Open(root)
	must(t, err)
	if n := strings.Count(warn.String(), "\n"); n != 1 || !strings.Contains(warn.String(), "made 8 entries private") {
		t.Errorf("warning %q, want one line about 8 entries", warn.String())
	}
	for _, p := range loose {
		fi, err := os.Stat(filepath.Join(root, p))
		must(t, err)
		if fi.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s: mode %v after open", p, fi.Mode().Perm())
		}
	}
	for _, p := range []string{"state.json", "active", "transactions", "transactions/1.json"} {
		if p == "active" {
			continue // not written by this test
		}
		fi, err := os.Stat(filepath.Join(root, p))
		must(t, err)
		if fi.Mode().Perm()&0o044 != 0o044 {
			t.Errorf("public record %s: mode %v, want readable by all", p, fi.Mode().Perm())
		}
	}
	for _, d := range []string{"assets", "db", "root", "cache"} {
		if fi, err := os.Stat(filepath.Join(root, d)); err != nil || fi.Mode().Perm() != 0o755 {
			t.Errorf("moss's %s: %v %v, want left at 0755", d, fi.Mode(), err)
		}
	}
	res, err := s2.Verify(VerifyOptions{})
	must(t, err)
	if len(res.MadePrivate) != len(loose) || len(res.Exposed) != 0 || !res.OK() {
		t.Errorf("verify after open: made private %q, exposed %q", res.MadePrivate, res.Exposed)
	}
	// Something another program made readable while the state is open.
	_, err = MkdirPrivate(root, "sha256/objects")
	must(t, err)
	must(t, os.Chmod(filepath.Join(root, "sha256"), 0o711))
	res, err = s2.Verify(VerifyOptions{})
	must(t, err)
	if res.OK() || len(res.Exposed) != 1 || !strings.HasPrefix(res.Exposed[0], "sha256 (mode 0711)") {
		t.Errorf("verify: exposed %q, OK %v", res.Exposed, res.OK())
	}
	warn.Reset()
	_, err = Open(root)
	must(t, err)
	if fi, _ := os.Stat(filepath.Join(root, "sha256")); fi.Mode().Perm() != 0o700 || !strings.Contains(warn.String(), "sha256 (mode 0711)") {
		t.Errorf("a new directory of another program: mode %v after open, warning %q", fi.Mode().Perm(), warn.String())
	}
}

// BenchmarkOpenPermissionCheck: what the owner's Open pays for looking at
// the modes (the top-level entries; transactions/ only for an older store,
// and in verify) on a state root with many transactions, against the rest
// of Open (state.json and the store's meta.json) in the same run.
func BenchmarkOpenPermissionCheck(b *testing.B) {
	n := 300
	if os.Getenv("MOSSFS_BENCH_FULL") == "1" {
		n = 10000
	}
	root := filepath.Join(b.TempDir(), "moss")
	if _, err := Create(root); err != nil {
		b.Fatal(err)
	}
	for i := 1; i <= n; i++ {
		id := strconv.Itoa(i)
		if err := os.WriteFile(filepath.Join(root, "transactions", id+".json"), []byte("{}\n"), 0o644); err != nil {
			b.Fatal(err)
		}
		if err := os.Mkdir(filepath.Join(root, "transactions", id+".inputs"), 0o700); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("baseline-format-and-store", func(b *testing.B) {
		for b.Loop() {
			if _, err := readFormat(root); err != nil {
				b.Fatal(err)
			}
			if _, err := cas.Open(filepath.Join(root, "cas")); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("exposed-top-level", func(b *testing.B) {
		for b.Loop() {
			if e, err := exposed(root, false); err != nil || len(e) != 0 {
				b.Fatal(e, err)
			}
		}
	})
	b.Run("exposed-deep-as-verify", func(b *testing.B) {
		for b.Loop() {
			if e, err := Exposed(root); err != nil || len(e) != 0 {
				b.Fatal(e, err)
			}
		}
	})
	b.Run("open", func(b *testing.B) {
		for b.Loop() {
			if _, err := Open(root); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.ReportMetric(float64(n), "transactions")
}

// TestActiveSwapFileIsPublic: active is replaced through a swap file
// (package durable), which then holds the transaction active before, a
// public record like active itself: switching back and forth leaves
// nothing exposed, and opening the state root changes no mode.
func TestActiveSwapFileIsPublic(t *testing.T) {
	s := newState(t)
	compose(t, s, ComposeOptions{Add: []Fragment{frag(t, s, pkg("a", "1"), file{path: "f", content: "1"})}})
	compose(t, s, ComposeOptions{From: 1, Add: []Fragment{frag(t, s, pkg("a", "2"), file{path: "f", content: "2"})}})
	root := s.Root()
	for _, id := range []uint64{1, 2, 1} {
		must(t, s.SetActive(id))
	}
	swap := filepath.Join(root, durable.SwapName("active"))
	if data, err := os.ReadFile(swap); err != nil || string(data) != "2\n" {
		t.Fatalf("swap file of active: %q, %v; want the transaction active before (2)", data, err)
	}
	exposed, err := Exposed(root)
	must(t, err)
	if len(exposed) != 0 {
		t.Errorf("exposed after switching: %q", exposed)
	}
	var warn bytes.Buffer
	old := Warnings
	Warnings = &warn
	defer func() { Warnings = old }()
	if _, err := Open(root); err != nil {
		t.Fatal(err)
	}
	if warn.Len() != 0 {
		t.Errorf("opening the state root after switches: %q", warn.String())
	}
	if a, err := s.Active(); err != nil || a != 1 {
		t.Errorf("active %d, %v; want 1", a, err)
	}
}
