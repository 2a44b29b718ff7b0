package bls

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/mossfs/mossfs/internal/bootcmd"
)

func hexOf(c byte) string { return strings.Repeat(string("0123456789abcdef"[c%16]), 64) }

func txs(ids ...uint64) []Transaction {
	var out []Transaction
	for _, id := range ids {
		out = append(out, Transaction{ID: id, Image: hexOf(byte(id))})
	}
	return out
}

func names(dir string) []string {
	ents, _ := os.ReadDir(dir)
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

func TestSync(t *testing.T) {
	boot := t.TempDir()
	dir := filepath.Join(boot, "loader", "entries")
	os.MkdirAll(dir, 0o755)
	os.WriteFile(filepath.Join(dir, "debian-6.12.conf"), []byte("title Debian\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "mossfs-99.conf"), []byte("title gone\n"), 0o644)
	os.WriteFile(LoaderConf(dir), []byte("timeout 3\ndefault mossfs-99.conf\n"), 0o644)
	cfg := Config{Linux: "/vmlinuz-6.12", Initrd: []string{"/initrd.img-6.12"}, Options: "root=LABEL=root rw quiet"}
	res, err := Sync(dir, txs(1, 2, 3, 4, 5, 6, 7), cfg)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"debian-6.12.conf", "mossfs-3.conf", "mossfs-4.conf", "mossfs-5.conf", "mossfs-6.conf", "mossfs-7.conf"}
	if got := names(dir); !reflect.DeepEqual(got, want) {
		t.Fatalf("entries %v, want %v", got, want)
	}
	if !reflect.DeepEqual(res.Removed, []string{"mossfs-99.conf"}) || len(res.Written) != 5 {
		t.Errorf("result %+v", res)
	}
	data, _ := os.ReadFile(filepath.Join(dir, "mossfs-6.conf"))
	e := ParseEntry(data)
	if e.Get("linux") != "/vmlinuz-6.12" || e.Get("initrd") != "/initrd.img-6.12" || e.Get("version") != "6" {
		t.Errorf("entry:\n%s", data)
	}
	// What the boot side reads back from the entry's options.
	p := bootcmd.Parse(e.Get("options"))
	if p.TX != 6 || !p.HasDigest || p.Digest[0] != 0x66 || !reflect.DeepEqual(p.Fallback, []uint64{5, 4, 3}) || len(p.Problems) != 0 {
		t.Errorf("options %q parse to %+v", e.Get("options"), p)
	}
	if !strings.HasPrefix(e.Get("options"), "root=LABEL=root rw quiet moss.tx=6 ") {
		t.Errorf("options %q", e.Get("options"))
	}
	// The default named a removed entry: it moves to the newest; other lines stay.
	conf, _ := os.ReadFile(LoaderConf(dir))
	if string(conf) != "timeout 3\ndefault mossfs-7.conf\n" {
		t.Errorf("loader.conf %q", conf)
	}

	// Roll back to 4, then 3 and 4 are removed from the state: 4's entry
	// stays while it is default and exists; 3's goes.
	if err := SetDefault(dir, 4); err != nil {
		t.Fatal(err)
	}
	if d, _ := Default(dir); d != "mossfs-4.conf" {
		t.Errorf("default %q", d)
	}
	res, err = Sync(dir, txs(1, 2, 4, 5, 6, 7, 8, 9), Config{Linux: "/vmlinuz-6.12"})
	if err != nil {
		t.Fatal(err)
	}
	want = []string{"debian-6.12.conf", "mossfs-4.conf", "mossfs-5.conf", "mossfs-6.conf", "mossfs-7.conf", "mossfs-8.conf", "mossfs-9.conf"}
	if got := names(dir); !reflect.DeepEqual(got, want) {
		t.Errorf("after rollback: %v, want %v (%+v)", got, want, res)
	}
	if !reflect.DeepEqual(res.Kept, []string{"mossfs-4.conf"}) || !slices.Contains(res.Removed, "mossfs-3.conf") {
		t.Errorf("result %+v", res)
	}
}

func TestSetDefaultClones(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "entries")
	if err := SetDefault(dir, 3); err == nil {
		t.Error("SetDefault without any entry succeeded")
	}
	if _, err := Sync(dir, txs(10, 11), Config{Linux: "/k", Initrd: []string{"/i1", "/i2"}, Options: `root=/dev/vda "x=a b"`}); err != nil {
		t.Fatal(err)
	}
	if err := SetDefault(dir, 3); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(dir, "mossfs-3.conf"))
	if err != nil {
		t.Fatal(err)
	}
	e := ParseEntry(data)
	if !reflect.DeepEqual(e.All("initrd"), []string{"/i1", "/i2"}) || e.Get("options") != `root=/dev/vda "x=a b" moss.tx=3` {
		t.Errorf("cloned entry:\n%s", data)
	}
	if d, _ := Default(dir); d != "mossfs-3.conf" {
		t.Errorf("default %q", d)
	}
	if cfg, ok := Template(dir); !ok || cfg.Linux != "/k" {
		t.Errorf("template %+v", cfg)
	}
}

func TestStripOptions(t *testing.T) {
	got := StripOptions(`BOOT_IMAGE=/vmlinuz root=/dev/vda1 moss.tx=5 "moss.fallback=4,3" initrd=/x quiet x="a b" moss.digest=sha256:00`)
	if got != `root=/dev/vda1 quiet x="a b"` {
		t.Errorf("%q", got)
	}
}

func TestSetDefaultFound(t *testing.T) {
	root := t.TempDir()
	if dirs, err := SetDefaultFound(root, 2); err != nil || len(dirs) != 0 {
		t.Errorf("no entries anywhere: %v %v", dirs, err)
	}
	esp := filepath.Join(root, "efi", "loader", "entries")
	if _, err := Sync(esp, txs(1, 2), Config{Linux: "/k"}); err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(root, "boot", "loader", "entries"), 0o755) // no mossfs entries: left alone
	dirs, err := SetDefaultFound(root, 1)
	if err != nil || len(dirs) != 1 || dirs[0] != esp {
		t.Fatalf("%v %v", dirs, err)
	}
	if d, _ := Default(esp); d != "mossfs-1.conf" {
		t.Errorf("default %q", d)
	}
	if _, err := os.Stat(filepath.Join(root, "boot", "loader", "loader.conf")); err == nil {
		t.Error("loader.conf written where there are no mossfs entries")
	}
}

// TestFindEntryDirs: a standard directory counts when it holds a mossfs
// entry file, found past other entries; other entries, a directory named
// like an entry and a missing directory do not count.
func TestFindEntryDirs(t *testing.T) {
	root := t.TempDir()
	boot := filepath.Join(root, "boot/loader/entries")
	efi := filepath.Join(root, "efi/loader/entries")
	for _, d := range []string{boot, efi} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 150 {
		for _, d := range []string{boot, efi} {
			if err := os.WriteFile(filepath.Join(d, fmt.Sprintf("debian-%03d.conf", i)), []byte("title x\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := os.Mkdir(filepath.Join(boot, EntryName(4)), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(efi, EntryName(7)), []byte("title mossfs 7\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := FindEntryDirs(root); len(got) != 1 || got[0] != efi {
		t.Errorf("FindEntryDirs = %q, want [%s]", got, efi)
	}
}
