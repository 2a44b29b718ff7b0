package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mossfs/mossfs/internal/bls"
	"github.com/mossfs/mossfs/internal/bootcmd"
)

func TestBLSCommand(t *testing.T) {
	b := newBootState(t)
	entries := filepath.Join(t.TempDir(), "loader", "entries")
	runBLS := func(args ...string) (string, error) {
		blsCmd.Flags().VisitAll(resetFlag)
		var out bytes.Buffer
		rootCmd.SetOut(&out)
		defer rootCmd.SetOut(nil)
		rootCmd.SetArgs(append([]string{"bls", entries, "--root", b.root}, args...))
		err := rootCmd.Execute()
		return out.String(), err
	}
	// Without a kernel and without an entry to copy it from: refused.
	if _, err := runBLS(); err == nil || !strings.Contains(err.Error(), "no kernel") {
		t.Errorf("without --linux: %v", err)
	}
	if _, err := runBLS("--linux", "/vmlinuz-6.12", "--initrd", "/initrd-6.12", "--options", "root=/dev/vda rw moss.tx=99", "--keep", "2"); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(entries)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if strings.Join(names, " ") != "mossfs-2.conf mossfs-3.conf" {
		t.Errorf("entries %v", names)
	}
	data, _ := os.ReadFile(filepath.Join(entries, "mossfs-3.conf"))
	p := bootcmd.Parse(bls.ParseEntry(data).Get("options"))
	if p.TX != 3 || !p.HasDigest || len(p.Fallback) != 1 || p.Fallback[0] != 2 {
		t.Errorf("entry 3 parses to %+v:\n%s", p, data)
	}
	if d, _ := bls.Default(entries); d != "mossfs-3.conf" {
		t.Errorf("default %q", d)
	}
	// Transaction 3 removed from the state: its entry goes, the kernel and
	// options are taken from the existing entries.
	os.Remove(filepath.Join(b.root, "transactions", "3.json"))
	out, err := runBLS("--json")
	if err != nil || !strings.Contains(out, `"mossfs-3.conf"`) {
		t.Fatalf("%v %s", err, out)
	}
	data, err = os.ReadFile(filepath.Join(entries, "mossfs-1.conf"))
	if err != nil || !strings.Contains(string(data), "linux /vmlinuz-6.12") || !strings.Contains(string(data), "options root=/dev/vda rw moss.tx=1 ") {
		t.Errorf("entry 1 from the template: %v\n%s", err, data)
	}
	if _, err := os.Stat(filepath.Join(entries, "mossfs-3.conf")); err == nil {
		t.Error("entry of the removed transaction 3 is still there")
	}
	if d, _ := bls.Default(entries); d != "mossfs-2.conf" {
		t.Errorf("default after removal %q", d)
	}
}
