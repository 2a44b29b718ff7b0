package kvmtests

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/mossfs/mossfs/kvmtests/vm"
)

// prepareKernelDisk lays out what the kernel-feature guest tests read:
// verity/ (files with their digests from the fsverity CLI) and ovl/ (an
// object directory and an EROFS metadata image made with mkfs.erofs from
// stubs carrying trusted.overlay.metacopy/redirect, kernel.md §3.4).
func prepareKernelDisk(t *testing.T, root string) {
	for name, data := range map[string][]byte{
		"data.bin":  pattern(1<<20+1234, 1), // several Merkle levels, a partial last block
		"empty.bin": nil,
		"block.bin": pattern(4096, 2),
	} {
		p := filepath.Join(root, "verity", name)
		writeFile(t, p, data)
		writeFile(t, p+".digest", []byte(fsverityDigest(t, p)+"\n"))
	}

	base := filepath.Join(root, "ovl")
	stubs := t.TempDir()
	for i, name := range []string{"good", "second", "tampered", "noverity", "nodigest"} {
		data := pattern(5000+i*4096, byte(10+i))
		writeFile(t, filepath.Join(base, "plain", name), data)
		tmp := filepath.Join(t.TempDir(), name)
		writeFile(t, tmp, data)
		digest := fsverityDigest(t, tmp)
		obj := filepath.Join(base, "objects", digest[:2], digest[2:])
		if name == "tampered" {
			data = append([]byte(nil), data...)
			data[100] ^= 0xff // same size, different content: no longer matches its name
		}
		writeFile(t, obj, data)
		if name == "noverity" {
			writeFile(t, filepath.Join(base, "noverity.object"), []byte(digest+"\n"))
		}
		stub := filepath.Join(stubs, name)
		writeFile(t, stub, nil)
		if err := os.Truncate(stub, int64(len(data))); err != nil {
			t.Fatal(err)
		}
		run(t, "setfattr", "-n", "trusted.overlay.redirect", "-v", "/"+digest[:2]+"/"+digest[2:], stub)
		if name == "nodigest" {
			run(t, "setfattr", "-n", "trusted.overlay.metacopy", stub)
		} else {
			run(t, "setfattr", "-n", "trusted.overlay.metacopy", "-v", "0x00240001"+digest, stub)
		}
	}
	run(t, "mkfs.erofs", "--quiet", filepath.Join(base, "meta.erofs"), stubs)
}

// TestGuest is the main boot: every guest test in kvmtests/guest.
func TestGuest(t *testing.T) {
	env := harness(t)
	root := t.TempDir()
	prepareKernelDisk(t, root)
	disk := filepath.Join(env.Work, "guest.ext4")
	if err := vm.MakeExt4(disk, root, "kvmtest", 64); err != nil {
		t.Fatal(err)
	}
	res := boot(t, env, vm.Boot{Name: "guest", Body: guestTests("-test.skip '^TestPowerCut'"), Disks: []string{disk}})
	report(t, res)
}
