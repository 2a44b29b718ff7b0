package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/mossfs/mossfs/internal/bls"
	"github.com/mossfs/mossfs/internal/cli"
	"github.com/mossfs/mossfs/internal/state"
	"github.com/mossfs/mossfs/internal/testenv"
	"golang.org/x/sys/unix"
)

// sysTriggerFiles are real system triggers from AerynOS's recipes (see
// ../shared/reference/triggers.md), their commands and patterns mapped to
// Debian's paths, plus two that must fail: vlc_cache_gen writes into /usr
// (read-only: the transaction's image), ibus_components' program is absent;
// and one of our own, mossfstest_sched, which copies its /proc/self/sched to
// /run: the scheduling the triggers' programs run with.
var sysTriggerFiles = map[string]string{
	"mossfstest_sched.yaml": `name: mossfstest_sched
description: Record the scheduling the triggers run with
after: systemd_tmpfiles
handlers:
  sched:
    run: /usr/bin/cp
    args: ["/proc/self/sched", "/run/mossfstest-sched"]
paths:
  /usr/share/mossfstest/hello:
    handlers: [sched]
`,
	"systemd_machine_id.yaml": `name: systemd_machine_id
description: Generate a machine id
before: systemd_etcfiles
handlers:
  machine-id:
    run: /usr/bin/systemd-machine-id-setup
    args: []
paths:
  /usr/bin/systemd-machine-id-setup:
    handlers: [machine-id]
`,
	"systemd_etcfiles.yaml": `name: systemd_etcfiles
description: Create /etc files from etc.conf
handlers:
  etcfiles:
    run: /usr/bin/systemd-tmpfiles
    args: ["--create", "/usr/lib/tmpfiles.d/etc.conf", "-E"]
paths:
  /usr/lib/tmpfiles.d/etc.conf:
    handlers: [etcfiles]
`,
	"systemd_sysusers.yaml": `name: systemd_sysusers
description: Create system users
after: systemd_etcfiles
handlers:
  sysusers:
    run: /usr/bin/systemd-sysusers
    args: []
paths:
  /usr/lib/sysusers.d/*.conf:
    handlers: [sysusers]
`,
	"systemd_tmpfiles.yaml": `name: systemd_tmpfiles
description: Create tmpfiles
after: systemd_sysusers
handlers:
  tmpfiles:
    run: /usr/bin/systemd-tmpfiles
    args: ["--create", "-E"]
paths:
  /usr/lib/tmpfiles.d/*.conf:
    handlers: [tmpfiles]
`,
	"glibc_ldconfig.yaml": `name: glibc_ldconfig
description: Update the dynamic linker cache
after: systemd_tmpfiles
handlers:
  ldconfig:
    run: /usr/sbin/ldconfig
    args: ["-X"]
paths:
  /usr/lib/x86_64-linux-gnu/lib*.so*:
    handlers: [ldconfig]
`,
	"vlc_cache_gen.yaml": `name: vlc_cache_gen
description: Generate the VLC plugin cache
after: systemd_tmpfiles
handlers:
  vlc:
    run: /usr/bin/touch
    args: ["/usr/lib/vlc/plugins/plugins.dat"]
paths:
  /usr/lib/vlc/plugins/**:
    handlers: [vlc]
`,
	"ibus_components.yaml": `name: ibus_components
description: Update the ibus component cache
after: systemd_tmpfiles
handlers:
  ibus:
    run: /usr/bin/ibus
    args: ["write-cache", "--system"]
paths:
  /usr/share/ibus/component/**:
    handlers: [ibus]
`,
}

// sysTriggerTree writes a small real /usr: the host's programs the
// triggers run, with their shared-library closure (ldd), the trigger files
// and the configuration they act on.
func sysTriggerTree(t *testing.T, dir string) {
	t.Helper()
	copyTo := func(src, rel string) {
		data, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, rel)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, data, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write := func(rel, content string) {
		p := filepath.Join(dir, rel)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// usrRel maps a host path to its place below /usr (merged /usr: /lib is usr/lib).
	usrRel := func(p string) string {
		if r, ok := strings.CutPrefix(p, "/usr/"); ok {
			return r
		}
		return strings.TrimPrefix(p, "/")
	}
	for _, prog := range []string{"/usr/bin/systemd-sysusers", "/usr/bin/systemd-tmpfiles", "/usr/bin/systemd-machine-id-setup", "/usr/sbin/ldconfig", "/usr/bin/touch", "/usr/bin/cp"} {
		if _, err := os.Stat(prog); err != nil {
			t.Fatalf("%s (Debian's systemd, libc-bin, coreutils): %v", prog, err)
		}
		copyTo(prog, usrRel(prog))
		out, err := exec.Command("ldd", prog).Output()
		if err != nil {
			continue // static
		}
		for _, l := range strings.Split(string(out), "\n") {
			f := strings.Fields(l)
			var lib string
			switch {
			case len(f) >= 3 && f[1] == "=>" && strings.HasPrefix(f[2], "/"):
				lib = f[2]
			case len(f) >= 1 && strings.HasPrefix(f[0], "/"):
				lib = f[0]
			default:
				continue
			}
			copyTo(lib, usrRel(lib))
		}
	}
	for name, y := range sysTriggerFiles {
		write("share/moss/triggers/sys.d/"+name, y)
	}
	write("lib/sysusers.d/mossfstest.conf", "u mossfstest - \"mossfs system trigger test\" /var/lib/mossfstest\n")
	// Owned by the user sysusers creates: tmpfiles fails unless sysusers ran first.
	write("lib/tmpfiles.d/mossfstest.conf", "d /var/lib/mossfstest 0750 mossfstest mossfstest -\n")
	write("lib/tmpfiles.d/etc.conf", "L /etc/mossfstest-etcfile - - - - ../usr/share/mossfstest/hello\n")
	write("share/mossfstest/hello", "hello\n")
	write("lib/vlc/plugins/libdummy_plugin.so", "not really a plugin\n")
	write("share/ibus/component/dummy.xml", "<component/>\n")
}

const sysTrigChildEnv = "MOSSFS_TEST_SYSTRIG_CHILD"

type sysTrigConfig struct {
	Bin, Root, Work, Entries string
	HostOnlyLib              string
}

// TestSystemTriggersAfterSwitch switches the real /usr, in a mount
// namespace of its own with overlays over /etc and /var and a tmpfs on
// /run, to a composed transaction holding real system triggers and Debian's
// programs: the triggers run in moss's order with a line each; sysusers
// creates the user in the overlaid /etc/passwd, tmpfiles makes its
// directory (owned by it, so only after sysusers), ldconfig -X writes a
// cache of the new /usr's libraries; the one writing into /usr and the one
// whose program is missing are warnings naming them; the switch stands.
// --skip-triggers, the boot-time --booted rule and rollback follow. The
// host's /etc and /var are compared before and after.
func TestSystemTriggersAfterSwitch(t *testing.T) {
	if cfg := os.Getenv(sysTrigChildEnv); cfg != "" {
		sysTrigChild(t, cfg)
		return
	}
	testenv.RequireMountNS(t)
	work := t.TempDir()
	bin := filepath.Join(work, "bin")
	for _, p := range []string{"./", "../moss-compose"} {
		cmd := exec.Command("go", "build", "-o", bin+"/", p)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", p, err, out)
		}
	}
	src := filepath.Join(work, "src")
	sysTriggerTree(t, src)
	root := filepath.Join(work, "state")
	compose := func(from string) {
		args := []string{"compose", "--root", root, "--tree", src, "-q"}
		if from != "" {
			args = append(args, "--from", from)
		}
		if out, err := exec.Command(filepath.Join(bin, "moss-compose"), args...).CombinedOutput(); err != nil {
			t.Fatalf("moss-compose %v: %v\n%s", args, err, out)
		}
	}
	compose("")
	os.WriteFile(filepath.Join(src, "share/mossfstest/release"), []byte("2\n"), 0o644)
	compose("1")
	entries := filepath.Join(work, "loader", "entries")
	if _, err := bls.Sync(entries, []bls.Transaction{{ID: 1}, {ID: 2}}, bls.Config{Linux: "/vmlinuz", Options: "root=/dev/vda"}); err != nil {
		t.Fatal(err)
	}
	// A library the host's linker cache lists and the transaction lacks:
	// the cache ldconfig writes for the new /usr must not list it.
	hostCache, err := exec.Command("ldconfig", "-p").Output()
	if err != nil {
		t.Fatal(err)
	}
	var hostOnly string
	for _, m := range regexp.MustCompile(`(?m)^\s+(lib\S+\.so\S*) .*=> (\S+)$`).FindAllStringSubmatch(string(hostCache), -1) {
		if _, err := os.Stat(filepath.Join(src, "lib/x86_64-linux-gnu", m[1])); err != nil && strings.Contains(m[2], "x86_64-linux-gnu") {
			hostOnly = m[1]
			break
		}
	}
	if hostOnly == "" {
		t.Fatalf("no host library outside the transaction in ldconfig -p:\n%.2000s", hostCache)
	}
	before := hostEtcVar(t)

	cfg, _ := json.Marshal(sysTrigConfig{Bin: bin, Root: root, Work: work, Entries: entries, HostOnlyLib: hostOnly})
	child := exec.Command(os.Args[0], "-test.run=^TestSystemTriggersAfterSwitch$", "-test.v", "-test.count=1")
	child.Env = append(os.Environ(), sysTrigChildEnv+"="+string(cfg))
	// Its own mount namespace (Go makes every mount private in it): the
	// switched /usr and the overlays go away with it.
	child.SysProcAttr = &syscall.SysProcAttr{Unshareflags: unix.CLONE_NEWNS}
	out, err := child.CombinedOutput()
	t.Logf("in the namespace:\n%s", out)
	if err != nil {
		t.Errorf("the namespace's test failed: %v", err)
	}
	if after := hostEtcVar(t); after != before {
		t.Errorf("the host's /etc or /var changed:\nbefore %s\nafter  %s", before, after)
	}
	if data, _ := os.ReadFile("/etc/passwd"); strings.Contains(string(data), "mossfstest") {
		t.Error("the host's /etc/passwd has the test user")
	}
}

// hostEtcVar summarizes what the triggers would touch on the host.
func hostEtcVar(t *testing.T) string {
	var b strings.Builder
	for _, p := range []string{"/etc/passwd", "/etc/group", "/etc/shadow", "/etc/ld.so.cache", "/etc/mossfstest-etcfile", "/var/lib/mossfstest", "/etc/machine-id"} {
		st, err := os.Lstat(p)
		if err != nil {
			fmt.Fprintf(&b, "%s: absent; ", p)
			continue
		}
		fmt.Fprintf(&b, "%s: %d %s; ", p, st.Size(), st.ModTime())
	}
	return b.String()
}

func sysTrigChild(t *testing.T, cfgJSON string) {
	var cfg sysTrigConfig
	if err := json.Unmarshal([]byte(cfgJSON), &cfg); err != nil {
		t.Fatal(err)
	}
	// Overlays over /etc and /var, a tmpfs on /run: whatever the triggers
	// write lands in uppers that die with the namespace.
	upper := map[string]string{}
	for _, d := range []string{"/etc", "/var"} {
		u, w := filepath.Join(cfg.Work, "upper"+d), filepath.Join(cfg.Work, "work"+d)
		os.MkdirAll(u, 0o755)
		os.MkdirAll(w, 0o755)
		if err := unix.Mount("systrig-test", d, "overlay", 0, "lowerdir="+d+",upperdir="+u+",workdir="+w); err != nil {
			t.Fatalf("overlay over %s: %v", d, err)
		}
		upper[d] = u
	}
	if err := unix.Mount("systrig-test", "/run", "tmpfs", 0, "mode=0755"); err != nil {
		t.Fatalf("tmpfs on /run: %v", err)
	}
	mossfs := func(args ...string) string {
		t.Helper()
		args = append(args, "--root", cfg.Root, "--target", "/usr", "--bls-dir", cfg.Entries)
		out, err := exec.Command(filepath.Join(cfg.Bin, "mossfs"), args...).CombinedOutput()
		if err != nil {
			t.Fatalf("mossfs %v: %v\n%s", args, err, out)
		}
		t.Logf("mossfs %s:\n%s", strings.Join(args, " "), out)
		return string(out)
	}
	st, err := state.Open(cfg.Root)
	if err != nil {
		t.Fatal(err)
	}
	record := func() *state.SysTriggerRun {
		t.Helper()
		r, err := st.LastSysTriggers()
		if err != nil || r == nil {
			t.Fatalf("no record (%v)", err)
		}
		return r
	}

	out := mossfs("switch", "1")
	if id, _ := os.ReadFile("/usr/.stateID"); strings.TrimSpace(string(id)) != "1" {
		t.Fatalf("/usr/.stateID = %q after the switch", id)
	}
	// A line per trigger, in moss's order: the systemd chain, then the rest.
	var order []string
	lineRE := regexp.MustCompile(`^system trigger \d+/\d+ (\S+): `)
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		if m := lineRE.FindStringSubmatch(sc.Text()); m != nil {
			order = append(order, m[1])
		}
	}
	chain := []string{"systemd_machine_id", "systemd_etcfiles", "systemd_sysusers", "systemd_tmpfiles"}
	if len(order) != len(sysTriggerFiles) || !slices.Equal(order[:4], chain) {
		t.Errorf("trigger lines in order %v, want %v then the other four", order, chain)
	}
	// The triggers run as the switch was started, not as the switch runs
	// (cli.SwitchBoost, cli.ShortSlice): the nice value of this process,
	// the kernel's default slice.
	checkSched := func(after string) {
		t.Helper()
		sched, err := os.ReadFile("/run/mossfstest-sched")
		os.Remove("/run/mossfstest-sched")
		if err != nil {
			t.Fatalf("%s: mossfstest_sched recorded nothing: %v", after, err)
		}
		raw, _ := unix.Getpriority(unix.PRIO_PROCESS, 0) // 20-nice
		nice := 20 - raw
		field := func(name string) string {
			m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + `\s*:\s*(\d+)$`).FindStringSubmatch(string(sched))
			if m == nil {
				t.Fatalf("%s: no %s in the trigger's /proc/self/sched:\n%s", after, name, sched)
			}
			return m[1]
		}
		if p, sl := field("prio"), field("se.slice"); p != strconv.Itoa(120+nice) || sl == strconv.Itoa(cli.ShortSlice) {
			t.Errorf("%s: a system trigger ran at prio %s with slice %s ns; want prio %d (nice %d, as the switch was started) and not the switch's %d ns slice", after, p, sl, 120+nice, nice, cli.ShortSlice)
		}
	}
	checkSched("switch")
	rec := record()
	var names []string
	exits := map[string]int{}
	for _, tr := range rec.Triggers {
		names = append(names, tr.Name)
		exits[tr.Name] = tr.Commands[0].Exit
	}
	if rec.Tx != 1 || !slices.Equal(names, order) {
		t.Errorf("record: tx %d, triggers %v; want tx 1, %v", rec.Tx, names, order)
	}
	for _, n := range []string{"systemd_machine_id", "systemd_etcfiles", "systemd_sysusers", "systemd_tmpfiles", "glibc_ldconfig"} {
		if exits[n] != 0 {
			t.Errorf("%s exited %d", n, exits[n])
		}
	}
	if exits["vlc_cache_gen"] == 0 || exits["ibus_components"] != -1 {
		t.Errorf("vlc_cache_gen exit %d (want a failure), ibus_components %d (want -1: cannot start)", exits["vlc_cache_gen"], exits["ibus_components"])
	}
	if !strings.Contains(out, "warning: system trigger vlc_cache_gen writes into the read-only /usr") {
		t.Error("no warning naming vlc_cache_gen as writing into /usr")
	}
	if !regexp.MustCompile(`system trigger \d+/\d+ ibus_components: /usr/bin/ibus write-cache --system: failed \(.*no such file`).MatchString(out) {
		t.Error("no failure line for ibus_components' missing program")
	}

	// What the programs wrote, in the overlays' upper layers.
	passwd, _ := os.ReadFile(filepath.Join(upper["/etc"], "passwd"))
	var uid, gid int
	for _, l := range strings.Split(string(passwd), "\n") {
		if f := strings.Split(l, ":"); len(f) >= 4 && f[0] == "mossfstest" {
			fmt.Sscan(f[2], &uid)
			fmt.Sscan(f[3], &gid)
		}
	}
	if uid == 0 {
		t.Errorf("sysusers: no mossfstest in the overlaid /etc/passwd:\n%s", passwd)
	}
	var vst unix.Stat_t
	if err := unix.Lstat(filepath.Join(upper["/var"], "lib/mossfstest"), &vst); err != nil || int(vst.Uid) != uid || int(vst.Gid) != gid || vst.Mode&0o7777 != 0o750 {
		t.Errorf("tmpfiles: /var/lib/mossfstest in the overlay: %v uid %d gid %d mode %o; want %d:%d 0750", err, vst.Uid, vst.Gid, vst.Mode&0o7777, uid, gid)
	}
	if l, err := os.Readlink(filepath.Join(upper["/etc"], "mossfstest-etcfile")); err != nil || l != "../usr/share/mossfstest/hello" {
		t.Errorf("etcfiles: /etc/mossfstest-etcfile -> %q (%v)", l, err)
	}
	cache := filepath.Join(upper["/etc"], "ld.so.cache")
	listed, err := exec.Command("/usr/sbin/ldconfig", "-p", "-C", cache).Output()
	if err != nil {
		t.Errorf("ldconfig -X wrote no readable %s: %v", cache, err)
	}
	if !strings.Contains(string(listed), "libsystemd-shared") && !strings.Contains(string(listed), "libc.so.6") || strings.Contains(string(listed), cfg.HostOnlyLib) {
		t.Errorf("the new linker cache should list the transaction's libraries (libc.so.6), not the host's %s:\n%s", cfg.HostOnlyLib, listed)
	}
	if fi, err := os.Stat(filepath.Dir(st.SysTriggersPath())); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("record directory: %v mode %v, want 0700", err, fi.Mode())
	}

	// --skip-triggers: no trigger runs, the record still names 1.
	out = mossfs("switch", "--skip-triggers", "2")
	if strings.Contains(out, "system trigger ") || record().Tx != 1 {
		t.Errorf("switch --skip-triggers ran triggers or changed the record (tx %d)", record().Tx)
	}
	// The boot-time unit's command: 2 is live and the record says 1, so
	// they run; run again, they do not.
	// The unit's own command line (its program from the build, the test's state root).
	unit, err := os.ReadFile("../../dist/systemd/mossfs-triggers.service")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^ExecStart=/usr/bin/(\S+) (.*)$`).FindStringSubmatch(string(unit))
	if m == nil || m[1] != "moss-compose" {
		t.Fatalf("mossfs-triggers.service: no ExecStart=/usr/bin/moss-compose …:\n%s", unit)
	}
	bootUnit := func() string {
		o, err := exec.Command(filepath.Join(cfg.Bin, m[1]), append(strings.Fields(m[2]), "--root", cfg.Root)...).CombinedOutput()
		if err != nil {
			t.Fatalf("triggers run --booted: %v\n%s", err, o)
		}
		return string(o)
	}
	if o := bootUnit(); !strings.Contains(o, fmt.Sprintf("system trigger 3/%d systemd_sysusers", len(sysTriggerFiles))) || record().Tx != 2 {
		t.Errorf("--booted after a switch with --skip-triggers: record tx %d\n%s", record().Tx, o)
	}
	first := record().Finished
	if o := bootUnit(); !strings.Contains(o, "already ran for transaction 2") || !record().Finished.Equal(first) {
		t.Errorf("--booted a second time ran again:\n%s", o)
	}
	// A /usr that mossfs did not mount (no .stateID): nothing to run, no error.
	o, err := exec.Command(filepath.Join(cfg.Bin, m[1]), append(strings.Fields(m[2]), "--root", cfg.Root, "--usr", t.TempDir())...).CombinedOutput()
	if err != nil || !strings.Contains(string(o), "is not a mossfs transaction") || !record().Finished.Equal(first) {
		t.Errorf("--booted on a /usr without .stateID: %v\n%s", err, o)
	}
	// Rollback goes to 1 and runs its triggers.
	out = mossfs("rollback")
	if !strings.Contains(out, fmt.Sprintf("system trigger 3/%d systemd_sysusers", len(sysTriggerFiles))) || record().Tx != 1 {
		t.Errorf("rollback: record tx %d\n%s", record().Tx, out)
	}
	checkSched("rollback")
	// mossfs status shows the record.
	so, err := exec.Command(filepath.Join(cfg.Bin, "mossfs"), "status", "--json", "--root", cfg.Root).Output()
	var rep statusReport
	if err != nil || json.Unmarshal(so, &rep) != nil || rep.SysTriggers == nil || rep.SysTriggers.Tx != 1 || len(rep.SysTriggers.Triggers) != len(sysTriggerFiles) {
		t.Errorf("mossfs status --json: %v\n%s", err, so)
	}
}
