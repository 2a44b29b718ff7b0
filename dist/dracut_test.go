package dist

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/mossfs/mossfs/kvmtests/vm"
)

// guestKernel is the Debian 6.12 kernel the VM tests boot (same cache).
func guestKernel(t *testing.T) *vm.Kernel {
	t.Helper()
	k, err := vm.FetchKernel(filepath.Join(repoRoot(t), "kvmtests", ".cache"), vm.DefaultMeta, vm.DefaultModules)
	if err != nil {
		t.Skipf("the VM kernel cannot be obtained (no network or apt lists): %v", err)
	}
	return k
}

func fetchDracut(t *testing.T) *vm.Dracut {
	t.Helper()
	d, err := vm.FetchDracut(filepath.Join(repoRoot(t), "kvmtests", ".cache"))
	if errors.Is(err, vm.ErrUnavailable) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestDracutModule builds an initramfs for the VM kernel with Debian's own
// dracut (unpacked, not installed) finding mossfs and the 90mossfs module
// where make install put them, with only the systemd initrd modules and
// ours; then lsinitrd, dracut's reader, shows the module, the enabled
// unit, mossfs (byte-equal to the installed one) and the kernel modules
// mossfs mounts with (only 90mossfs asks for them here).
func TestDracutModule(t *testing.T) {
	dest, _ := installed(t)
	k := guestKernel(t)
	d := fetchDracut(t)
	t.Logf("kernel %s, %s", k.Release, d.Versions)
	img := filepath.Join(t.TempDir(), "initrd.img")
	log, err := d.Build(vm.DracutBuild{Kernel: k, Layers: []string{dest}, Out: img,
		Modules: []string{"systemd", "systemd-initrd", "dracut-systemd", "base", "mossfs"}})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(log, "Including module: mossfs") {
		t.Errorf("dracut did not include mossfs:\n%s", log)
	}
	listing, err := d.List(img)
	if err != nil {
		t.Fatal(err)
	}
	mods := regexp.MustCompile(`(?s)dracut modules:\n(.*?)\n=+`).FindStringSubmatch(listing)
	if mods == nil || !regexp.MustCompile(`(?m)^mossfs$`).MatchString(mods[1]) {
		t.Errorf("lsinitrd lists no dracut module mossfs:\n%.2000s", listing)
	}
	for _, re := range []string{
		`(?m)^-rwxr-xr-x .* usr/bin/mossfs$`,
		`(?m)^-rw-r--r-- .* usr/lib/systemd/system/mossfs-boot\.service$`,
		`(?m)^l.* etc/systemd/system/initrd\.target\.wants/mossfs-boot\.service -> /(usr/)?lib/systemd/system/mossfs-boot\.service$`,
		`(?m) usr/lib/modules/` + regexp.QuoteMeta(k.Release) + `/.*/erofs\.ko$`,
		`(?m) usr/lib/modules/` + regexp.QuoteMeta(k.Release) + `/.*/overlay\.ko$`,
		`(?m) usr/lib/modules/` + regexp.QuoteMeta(k.Release) + `/.*/loop\.ko$`,
	} {
		if !regexp.MustCompile(re).MatchString(listing) {
			t.Errorf("lsinitrd: nothing matches %s", re)
		}
	}
	for inImage, installedAt := range map[string]string{
		"usr/bin/mossfs": "usr/bin/mossfs",
		"usr/lib/systemd/system/mossfs-boot.service": "usr/lib/dracut/modules.d/90mossfs/mossfs-boot.service",
	} {
		got, err := d.Cat(img, inImage)
		if err != nil {
			t.Fatal(err)
		}
		want, err := os.ReadFile(filepath.Join(dest, installedAt))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s in the image (%d bytes) differs from the installed %s (%d bytes)", inImage, len(got), installedAt, len(want))
		}
	}
	if t.Failed() {
		t.Logf("dracut:\n%s\nlsinitrd:\n%s", log, listing)
	}
}
