package trigtest

import (
	"crypto/sha256"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mossfs/mossfs/internal/state"
)

// probeTree is a /usr holding only the (static) probe program.
func probeTree(t testing.TB) string {
	t.Helper()
	d := tmpDir(t)
	if err := os.MkdirAll(filepath.Join(d, "libexec"), 0o755); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(hostUsr(t), "libexec/probe"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(d, "libexec/probe"), data, 0o755); err != nil {
		t.Fatal(err)
	}
	return d
}

// probeTrigger is a trigger file running the probe with args when
// /usr/share/probe-in/* exists.
func probeTrigger(name string, args ...string) map[string]string {
	return map[string]string{
		"share/moss/triggers/tx.d/" + name + ".yaml": fmt.Sprintf("name: %s\ndescription: test\nhandlers:\n  h:\n    run: /usr/libexec/probe\n    args: [%s]\npaths:\n  \"/usr/share/probe-in/*\": {handlers: [h]}\n",
			name, `"`+strings.Join(args, `", "`)+`"`),
		"share/probe-in/" + name: name + "\n",
	}
}

type composed struct {
	s        *state.State
	res      *state.ComposeResult
	err      error
	warnings []string
}

func composeProbe(t *testing.T, timeout time.Duration, extra ...map[string]string) composed {
	t.Helper()
	s := newState(t)
	frags := []state.Fragment{importTree(t, s, probeTree(t))}
	for _, files := range extra {
		frags = append(frags, importTree(t, s, writeTree(t, files)))
	}
	c := composed{s: s}
	c.res, c.err = s.Compose(state.ComposeOptions{Add: frags, Time: epoch, Triggers: state.TriggerOptions{
		Timeout: timeout, Warn: func(m string) { c.warnings = append(c.warnings, m) }}})
	return c
}

// etcSnapshot hashes the names, types, sizes and mtimes under /etc.
func etcSnapshot(t *testing.T) [32]byte {
	t.Helper()
	h := sha256.New()
	filepath.WalkDir("/etc", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if info, err := d.Info(); err == nil {
			fmt.Fprintf(h, "%s %v %d %d\n", p, info.Mode(), info.Size(), info.ModTime().UnixNano())
		}
		return nil
	})
	var out [32]byte
	copy(out[:], h.Sum(nil))
	return out
}

// nothingPublished checks that a failed compose left no transaction, no
// image and no scratch directory.
func nothingPublished(t *testing.T, s *state.State) {
	t.Helper()
	if ids, err := s.IDs(); err != nil || len(ids) != 0 {
		t.Errorf("transactions after a failed compose: %v (%v)", ids, err)
	}
	for _, d := range []string{s.ImagesDir(), filepath.Join(s.Root(), "transactions")} {
		ents, _ := os.ReadDir(d)
		for _, e := range ents {
			if e.Name() != "next" {
				t.Errorf("%s left in %s after a failed compose", e.Name(), d)
			}
		}
	}
}

func TestHandlerFailures(t *testing.T) {
	requireRoot(t)
	etcBefore := etcSnapshot(t)

	t.Run("exit 1 is a warning", func(t *testing.T) {
		c := composeProbe(t, 0, probeTrigger("fails", "exit1"))
		if c.err != nil {
			t.Fatal(c.err)
		}
		r := c.res.Tx.Triggers
		if len(r) != 1 || len(r[0].Warnings) != 1 || !strings.Contains(r[0].Warnings[0], "exit status 1") || !strings.Contains(r[0].Warnings[0], "failing on purpose") {
			t.Errorf("records %+v", r)
		}
		if len(c.warnings) != 1 || c.warnings[0] != r[0].Warnings[0] {
			t.Errorf("warnings %q", c.warnings)
		}
	})
	t.Run("cannot start fails the compose", func(t *testing.T) {
		files := probeTrigger("missing", "x")
		files["share/moss/triggers/tx.d/missing.yaml"] = strings.Replace(files["share/moss/triggers/tx.d/missing.yaml"], "/usr/libexec/probe", "/usr/libexec/no-such-program", 1)
		c := composeProbe(t, 0, files)
		if c.err == nil || !strings.Contains(c.err.Error(), "cannot start") || !strings.Contains(c.err.Error(), "no-such-program") {
			t.Fatalf("compose: %v, want a cannot-start error", c.err)
		}
		nothingPublished(t, c.s)
	})
	t.Run("timeout fails the compose", func(t *testing.T) {
		start := time.Now()
		c := composeProbe(t, 2*time.Second, probeTrigger("sleeper", "sleep"))
		if c.err == nil || !strings.Contains(c.err.Error(), "still running after 2s") {
			t.Fatalf("compose: %v, want a timeout", c.err)
		}
		if d := time.Since(start); d > time.Minute {
			t.Errorf("the timed-out compose took %v", d)
		}
		nothingPublished(t, c.s)
	})
	t.Run("no network", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		port := fmt.Sprint(ln.Addr().(*net.TCPAddr).Port)
		accepted := make(chan bool, 1)
		go func() {
			c, err := ln.Accept()
			if err == nil {
				c.Close()
			}
			accepted <- err == nil
		}()
		c := composeProbe(t, 0, probeTrigger("net", "net", port))
		if c.err != nil {
			t.Fatal(c.err)
		}
		if w := c.res.Tx.Triggers[0].Warnings; len(w) != 1 || !strings.Contains(w[0], "exit status 3") || !strings.Contains(w[0], "no network") {
			t.Errorf("warnings %q, want the probe's failed connection", w)
		}
		ln.Close()
		if <-accepted {
			t.Error("the handler reached the host's loopback")
		}
	})
	t.Run("/etc is read-only", func(t *testing.T) {
		c := composeProbe(t, 0, probeTrigger("etc", "etc"))
		if c.err != nil {
			t.Fatal(c.err)
		}
		if w := c.res.Tx.Triggers[0].Warnings; len(w) != 1 || !strings.Contains(w[0], "read-only file system") {
			t.Errorf("warnings %q, want a read-only /etc", w)
		}
		if _, err := os.Lstat("/etc/mossfs-trigger-probe"); err == nil {
			os.Remove("/etc/mossfs-trigger-probe")
			t.Error("the handler wrote the host's /etc")
		}
	})
	if etcSnapshot(t) != etcBefore {
		t.Error("the host's /etc changed while handlers ran")
	}
}

// TestContainerView checks what a handler sees.
func TestContainerView(t *testing.T) {
	requireRoot(t)
	c := composeProbe(t, 0, probeTrigger("env", "env"))
	if c.err != nil {
		t.Fatal(c.err)
	}
	root, err := c.s.Tree(c.res.Tx)
	if err != nil {
		t.Fatal(err)
	}
	got := string(fileOf(t, c.s, root, "/share/probe/env.txt"))
	for _, want := range []string{
		"env=LANG=C.UTF-8,PATH=" + state.TriggerPath + ",SOURCE_DATE_EPOCH=1700000000\n",
		"uid=0\n", "processes=2\n", "cwd=/\n",
		"root=bin,dev,etc,lib,lib32,lib64,proc,run,sbin,sys,tmp,usr,var\n",
		"writable /tmp=true\n", "writable /var=true\n", "writable /run=true\n", "writable /usr=true\n",
		"writable /etc=false\n", "writable /=false\n",
		"interfaces=lo\n", "stdin-char=true\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("the handler saw\n%s\nwant a line %q", got, want)
		}
	}
	// Nothing but the handler's own output comes out of its container.
	if r := c.res.Tx.Triggers[0]; strings.Join(r.Paths, " ") != "/usr/share/probe /usr/share/probe/env.txt" && strings.Join(r.Paths, " ") != "/usr/share/probe/env.txt" {
		t.Errorf("env trigger produced %v", r.Paths)
	}
}

// TestOverlayForms folds every form of upper-layer content: a metadata-only
// copy-up, a renamed directory (redirect), whiteouts, an opaque directory,
// changed and new files.
func TestOverlayForms(t *testing.T) {
	requireRoot(t)
	big := strings.Repeat("content of a file stored outside the image\n", 100)
	files := probeTrigger("forms", "overlay")
	for p, c := range map[string]string{
		"chmod-me": big, "old-dir/a": "a\n", "old-dir/sub/b": big, "delete-me": "x\n",
		"opaque/x": "x\n", "opaque/y": "y\n", "change-me": "before\n",
	} {
		files["share/probe-in/"+p] = c
	}
	c := composeProbe(t, 0, files)
	if c.err != nil {
		t.Fatal(c.err)
	}
	if w := c.res.Tx.Triggers[0].Warnings; len(w) > 0 {
		t.Fatalf("probe: %v", w)
	}
	root, err := c.s.Tree(c.res.Tx)
	if err != nil {
		t.Fatal(err)
	}
	in := "/share/probe-in/"
	if n := find(root, in+"chmod-me"); n == nil || n.Mode&0o777 != 0o600 || string(fileOf(t, c.s, root, in+"chmod-me")) != big {
		t.Errorf("chmod-me (metadata-only copy-up) is %+v", n)
	}
	if string(fileOf(t, c.s, root, in+"new-dir/a")) != "a\n" || string(fileOf(t, c.s, root, in+"new-dir/sub/b")) != big {
		t.Error("the renamed directory lost its contents")
	}
	for _, gone := range []string{"old-dir", "delete-me", "opaque/x", "opaque/y"} {
		if find(root, in+gone) != nil {
			t.Errorf("%s is still there", gone)
		}
	}
	if string(fileOf(t, c.s, root, in+"opaque/fresh")) != "fresh\n" || len(find(root, in+"opaque").Children) != 1 {
		t.Error("the opaque directory is not exactly its new contents")
	}
	if string(fileOf(t, c.s, root, in+"change-me")) != "changed\n" || string(fileOf(t, c.s, root, in+"new-file")) != "new\n" {
		t.Error("changed or new file wrong")
	}
	r := c.res.Tx.Triggers[0]
	for _, want := range []string{"/usr/share/probe-in/old-dir", "/usr/share/probe-in/delete-me"} {
		if !contains(r.Removed, want) {
			t.Errorf("record's removed paths %v lack %s", r.Removed, want)
		}
	}
	// The mounted image agrees with the tree.
	mnt := mountTx(t, c.s, c.res.Tx)
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join(mnt, in, "chmod-me"), &st); err != nil || st.Mode&0o777 != 0o600 || st.Mtim.Sec != epoch.Unix() {
		t.Errorf("mounted chmod-me: %v mode %o mtime %d", err, st.Mode, st.Mtim.Sec)
	}
	if data, err := os.ReadFile(filepath.Join(mnt, in, "chmod-me")); err != nil || string(data) != big {
		t.Errorf("mounted chmod-me content: %v", err)
	}
}

func TestTwoTriggersSamePath(t *testing.T) {
	requireRoot(t)
	a := probeTrigger("writer-a", "write", "/usr/share/probe/same", "a")
	for k, v := range probeTrigger("writer-b", "write", "/usr/share/probe/same", "b") {
		a[k] = v
	}
	c := composeProbe(t, 0, a)
	if c.err == nil || !strings.Contains(c.err.Error(), "writer-a") || !strings.Contains(c.err.Error(), "writer-b") || !strings.Contains(c.err.Error(), "/usr/share/probe/same") {
		t.Fatalf("compose: %v, want an error naming both triggers and the path", c.err)
	}
	nothingPublished(t, c.s)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// TestOrderedTriggersSeeEarlierOutputs: a trigger ordered after another
// runs over the other's outputs (its container's /usr holds them), the
// independent one does not, and each output is attributed to its maker.
func TestOrderedTriggersSeeEarlierOutputs(t *testing.T) {
	requireRoot(t)
	files := probeTrigger("first", "write", "/usr/share/probe-in/made-by-first", "first")
	for k, v := range probeTrigger("second", "copy", "/usr/share/probe-in/made-by-first", "/usr/share/probe-in/copied-by-second") {
		files[k] = v
	}
	for k, v := range probeTrigger("zindependent", "copy", "/usr/share/probe-in/made-by-first", "/usr/share/probe-in/copied-by-z") {
		files[k] = v
	}
	files["share/moss/triggers/tx.d/second.yaml"] = strings.Replace(files["share/moss/triggers/tx.d/second.yaml"], "description: test\n", "description: test\nafter: first\n", 1)
	c := composeProbe(t, 0, files)
	if c.err != nil {
		t.Fatal(c.err)
	}
	root, err := c.s.Tree(c.res.Tx)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(fileOf(t, c.s, root, "/share/probe-in/copied-by-second")); got != "first" {
		t.Errorf("second copied %q, want first's output", got)
	}
	if find(root, "/share/probe-in/copied-by-z") != nil {
		t.Error("an independent trigger saw another's output")
	}
	recs := recordsByName(c.res.Tx)
	if w := recs["zindependent"].Warnings; len(w) != 1 || !strings.Contains(w[0], "no such file") {
		t.Errorf("zindependent: %v", w)
	}
	if p := recs["second"].Paths; len(p) != 1 || p[0] != "/usr/share/probe-in/copied-by-second" {
		t.Errorf("second's outputs %v", p)
	}
	if p := recs["first"].Paths; len(p) != 1 || p[0] != "/usr/share/probe-in/made-by-first" {
		t.Errorf("first's outputs %v", p)
	}
	var order []string
	for _, r := range c.res.Tx.Triggers {
		order = append(order, r.Name)
	}
	if strings.Join(order, " ") != "zindependent first second" {
		t.Errorf("run order %v", order)
	}
}
