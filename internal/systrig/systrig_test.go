package systrig

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func writeTree(t *testing.T, files map[string]string) string {
	t.Helper()
	usr := t.TempDir()
	for rel, content := range files {
		p := filepath.Join(usr, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return usr
}

// TestRunOutcomes: a trigger per outcome (ok, non-zero exit, cannot start,
// timeout), matched with a capture against the tree's /usr paths, and an
// unmatched trigger that does not run. Every outcome is a line and a
// record entry, none is an error.
func TestRunOutcomes(t *testing.T) {
	usr := writeTree(t, map[string]string{
		"share/moss/triggers/sys.d/a.yaml": `name: a_ok
description: ok, once per captured version
handlers:
  h: {run: /bin/echo, args: ["v=$(v)"]}
paths:
  "/usr/lib/thing/(v:*)/*": {handlers: [h]}
`,
		"share/moss/triggers/sys.d/b.yaml": `name: b_fail
description: exits 1
after: a_ok
handlers:
  h: {run: /bin/sh, args: ["-c", "echo broken >&2; exit 3"]}
paths:
  /usr/lib/thing/**: {handlers: [h]}
`,
		"share/moss/triggers/sys.d/c.yaml": `name: c_missing
description: cannot start
after: b_fail
handlers:
  h: {run: /nonexistent/program, args: []}
paths:
  /usr: {handlers: [h]}
`,
		"share/moss/triggers/sys.d/d.yaml": `name: d_slow
description: times out
after: c_missing
handlers:
  h: {run: /bin/sleep, args: ["5"]}
paths:
  /usr/lib/thing/1/x: {handlers: [h]}
`,
		"share/moss/triggers/sys.d/e.yaml": `name: e_unmatched
description: matches nothing
handlers:
  h: {run: /bin/false, args: []}
paths:
  /usr/nothing/here: {handlers: [h]}
`,
		"share/moss/triggers/sys.d/broken.yaml": "name: [unterminated\n",
		"lib/thing/1/x":                         "",
		"lib/thing/2/y":                         "",
	})
	var log bytes.Buffer
	rec, err := Run(context.Background(), Options{Usr: usr, Tx: 7, Timeout: 300 * time.Millisecond, Log: &log})
	if err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + log.String())
	var names []string
	for _, tr := range rec.Triggers {
		names = append(names, tr.Name)
	}
	if strings.Join(names, " ") != "a_ok b_fail c_missing d_slow" {
		t.Fatalf("ran %v", names)
	}
	a := rec.Triggers[0].Commands
	if len(a) != 2 || a[0].Command != "/bin/echo v=1" || a[1].Command != "/bin/echo v=2" || a[0].Exit != 0 {
		t.Errorf("a_ok: %+v", a)
	}
	if c := rec.Triggers[1].Commands[0]; c.Exit != 3 || !strings.Contains(c.Output, "broken") {
		t.Errorf("b_fail: %+v", c)
	}
	if c := rec.Triggers[2].Commands[0]; c.Exit != -1 || !strings.Contains(c.Error, "no such file") {
		t.Errorf("c_missing: %+v", c)
	}
	if c := rec.Triggers[3].Commands[0]; c.Exit != -1 || !strings.Contains(c.Error, "timed out") {
		t.Errorf("d_slow: %+v", c)
	}
	if rec.Tx != 7 || rec.Failed() != 3 || len(rec.Skipped) != 1 || rec.Skipped[0] != "sys.d/broken.yaml" {
		t.Errorf("record: tx %d failed %d skipped %v", rec.Tx, rec.Failed(), rec.Skipped)
	}
	for _, want := range []string{
		"system trigger 1/4 a_ok: /bin/echo v=1: ok",
		"system trigger 2/4 b_fail: /bin/sh -c echo broken >&2; exit 3: failed (exit status 3",
		"warning: system trigger b_fail failed",
		"warning: system trigger file sys.d/broken.yaml skipped",
		"system trigger 4/4 d_slow: /bin/sleep 5: failed (timed out",
	} {
		if !strings.Contains(log.String(), want) {
			t.Errorf("log lacks %q", want)
		}
	}
}

// TestRunNoTriggers: a tree without trigger files runs nothing.
func TestRunNoTriggers(t *testing.T) {
	usr := writeTree(t, map[string]string{"bin/x": ""})
	var log bytes.Buffer
	rec, err := Run(context.Background(), Options{Usr: usr, Tx: 1, Log: &log})
	if err != nil || len(rec.Triggers) != 0 || !strings.Contains(log.String(), "no system triggers") {
		t.Fatalf("%v %+v %s", err, rec, log.String())
	}
}

func TestTailBuffer(t *testing.T) {
	var b tailBuffer
	for i := 0; i < 3*outputTail; i++ {
		b.Write([]byte{byte('a' + i%26)})
	}
	b.Write([]byte("END"))
	s := b.String()
	if len(s) != outputTail || !strings.HasSuffix(s, "END") {
		t.Fatalf("len %d suffix %q", len(s), s[len(s)-5:])
	}
}
