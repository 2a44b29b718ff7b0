package mountrec

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mossfs/mossfs/internal/durable"
)

func TestName(t *testing.T) {
	for in, want := range map[string]string{"/usr": "usr.json", "/": "root.json", "/a/b/": "a-b.json", "/mnt//x": "mnt-x.json"} {
		if got := Name(in); got != want {
			t.Errorf("Name(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestWriteListRemove(t *testing.T) {
	root := t.TempDir()
	unlock, err := Lock(root)
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	for _, r := range []Record{
		{Target: "/usr", Tx: 3, Image: "ab", Driver: "overlay", Verity: "off"},
		{Target: "/mnt/x", Tx: 4, Driver: "fuse"},
	} {
		if err := Write(root, r); err != nil {
			t.Fatal(err)
		}
	}
	// Rewriting a target replaces its record.
	if err := Write(root, Record{Target: "/usr", Tx: 5, Driver: "overlay"}); err != nil {
		t.Fatal(err)
	}
	recs, err := List(root)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 2 || recs[0].Target != "/mnt/x" || recs[1].Tx != 5 || recs[1].Time.IsZero() {
		t.Fatalf("List = %+v", recs)
	}
	// The record of /usr was replaced through its swap file, which now
	// holds the record before (package durable).
	swap := filepath.Join(Dir(root), durable.SwapName(Name("/usr")))
	if cur, _, err := Get(root, "/usr"); err != nil {
		t.Fatal(err)
	} else if data, err := os.ReadFile(swap); err != nil || !strings.Contains(string(data), `"tx": 3,`) {
		t.Errorf("swap file of /usr: %q, %v; want the record before (tx 3)", data, err)
	} else if cur.Tx != 5 {
		t.Errorf("record of /usr: tx %d", cur.Tx)
	}
	ents, _ := os.ReadDir(Dir(root))
	for _, e := range ents {
		if e.Name() != ".lock" && filepath.Ext(e.Name()) != ".json" && e.Name() != filepath.Base(swap) {
			t.Errorf("stray file %s", e.Name())
		}
	}
	r, ok, err := Get(root, "/usr")
	if err != nil || !ok || r.Tx != 5 {
		t.Fatalf("Get = %+v %v %v", r, ok, err)
	}
	if err := Remove(root, "/usr"); err != nil {
		t.Fatal(err)
	}
	if err := Remove(root, "/usr"); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := Get(root, "/usr"); ok {
		t.Fatal("record still there")
	}
	if _, err := os.Lstat(swap); !os.IsNotExist(err) {
		t.Errorf("swap file of a removed record: %v", err)
	}
	os.WriteFile(filepath.Join(Dir(root), "bad.json"), []byte("{"), 0o644)
	if _, err := List(root); err == nil {
		t.Fatal("corrupt record listed without error")
	}
}

// TestEncodeIsMarshalIndent: the record text written without encoding/json
// is byte for byte what json.MarshalIndent writes, with and without the
// members that are left out when empty; strings encoding/json would escape
// are left to it.
func TestEncodeIsMarshalIndent(t *testing.T) {
	at := time.Date(2026, 12, 7, 7, 56, 3, 469539477, time.UTC)
	for _, r := range []Record{
		{Target: "/usr", Tx: 2, Image: "c3b82ea0", ImagePath: "/.moss/images/c3b82ea0", Objects: "/.moss/cas/objects", Driver: "overlay", Verity: "off", Method: "detached-layer", Time: at, BootID: "a9253774-1542-47e2-ab08-0f79285f04e6"},
		{Target: "/mnt/x y", Driver: "fuse", Time: at.Truncate(time.Second)},
		{Target: "/", Tx: 18446744073709551615, Driver: "overlay", Time: time.Date(2026, 1, 1, 0, 0, 0, 1000, time.FixedZone("x", 3600))},
		{Target: "/a\"b", Driver: "overlay", Time: at},
		{Target: "/a<b>&c", Driver: "overlay", Time: at},
		{Target: "/é\x01\\", Driver: "overlay", Time: at},
		{Target: "/t", Driver: "overlay", Time: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)},
	} {
		want, werr := json.MarshalIndent(r, "", "  ")
		got, ok := encode(r)
		plain := !strings.ContainsAny(r.Target, "\"<>&\\\x01é") && r.Time.Year() <= 9999
		if ok != plain {
			t.Errorf("%+v: encode says %v, want %v", r, ok, plain)
		}
		if ok && (werr != nil || string(got) != string(want)) {
			t.Errorf("encode:\n%s\njson.MarshalIndent (%v):\n%s", got, werr, want)
		}
	}
}
