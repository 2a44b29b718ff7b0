package mountrec

import (
	"os"
	"path/filepath"
	"testing"
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
	ents, _ := os.ReadDir(Dir(root))
	for _, e := range ents {
		if e.Name() != ".lock" && filepath.Ext(e.Name()) != ".json" {
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
	os.WriteFile(filepath.Join(Dir(root), "bad.json"), []byte("{"), 0o644)
	if _, err := List(root); err == nil {
		t.Fatal("corrupt record listed without error")
	}
}
