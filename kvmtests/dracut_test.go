package kvmtests

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mossfs/mossfs/kvmtests/vm"
)

// dracutReport runs in the systemd initrd once the root file system is
// declared ready (after mossfs-boot.service, before initrd.target), checks
// what mossfs boot left at /sysroot/usr and ends the VM with the result.
const dracutReport = `#!/bin/bash
exec 3>/dev/ttyS1
echo KVMTEST-BEGIN >&3
read -r up _ </proc/uptime; echo "uptime $up" >&3
rc=0
check() {
	local name=$1 want=$2; shift 2
	local got; got=$("$@" 2>&1)
	if [ "$got" = "$want" ]; then echo "KVMTEST PASS $name" >&3
	else echo "$* gave '$got', want '$want'" >&3; echo "KVMTEST FAIL $name" >&3; rc=1; fi
}
check unit-active active systemctl is-active mossfs-boot.service
check unit-conflicts moss-fstx.service systemctl show -P Conflicts mossfs-boot.service
check usr-is-overlay overlay findmnt -n -o FSTYPE /sysroot/usr
check usr-stateid 1 cat /sysroot/usr/.stateID
check usr-content "release 1" cat /sysroot/usr/share/release
journalctl -b -u mossfs-boot.service --no-pager -o cat >&3 2>&1
read -r up _ </proc/uptime; echo "KVMTEST-END rc=$rc uptime $up" >&3
/usr/bin/kvmexit $rc
`

const dracutReportUnit = `[Unit]
Description=kvmtest: report what mossfs boot mounted at /sysroot/usr
DefaultDependencies=no
After=initrd-root-fs.target mossfs-boot.service
Before=initrd.target

[Service]
Type=oneshot
ExecStart=/usr/bin/bash /usr/lib/kvmtest-report.sh
StandardOutput=journal+console
StandardError=journal+console
`

// TestDracutBoot builds a systemd initramfs with Debian's dracut (unpacked,
// not installed) and our 90mossfs module for the VM kernel, and boots it
// with root=/dev/vda moss.tx=1: the root file system holds a state with
// transactions 1 and 2 (2 active), so /sysroot/usr holding transaction 1
// shows that mossfs-boot.service ran mossfs boot with the command line.
//
// It builds a 40 MB initramfs and boots systemd under TCG (about 100 s to
// mossfs boot on a loaded host), so it runs in make kvmtest
// (MOSSFS_KVM_DRACUT=1), not in make test, which checks the same image's
// contents with lsinitrd (dist.TestDracutModule).
func TestDracutBoot(t *testing.T) {
	if os.Getenv("MOSSFS_KVM_DRACUT") != "1" {
		t.Skip("boots a systemd initramfs built by dracut: make kvmtest (MOSSFS_KVM_DRACUT=1)")
	}
	env := harness(t)
	d, err := vm.FetchDracut(filepath.Join(env.Repo, "kvmtests", ".cache"))
	if err != nil {
		if strings.Contains(err.Error(), vm.ErrUnavailable.Error()) {
			t.Skip(err)
		}
		t.Fatal(err)
	}
	work := t.TempDir()

	// The root file system: a state composed on the host.
	root := filepath.Join(work, "root")
	for _, dir := range []string{"usr", "etc", "var"} {
		os.MkdirAll(filepath.Join(root, dir), 0o755)
	}
	src := filepath.Join(work, "src")
	os.MkdirAll(filepath.Join(src, "share"), 0o755)
	for i := 1; i <= 2; i++ {
		writeFile(t, filepath.Join(src, "share", "release"), []byte("release "+string(rune('0'+i))))
		args := []string{"compose", "--root", filepath.Join(root, ".moss"), "--tree", src, "-q", "--json"}
		out := run(t, env.Bins["moss-compose"], args...)
		var res struct {
			Transaction struct{ ID uint64 } `json:"transaction"`
		}
		if err := json.Unmarshal([]byte(out), &res); err != nil || res.Transaction.ID != uint64(i) {
			t.Fatalf("compose %d: %v %s", i, err, out)
		}
	}
	disk := filepath.Join(work, "root.ext4")
	if err := vm.MakeExt4(disk, root, "root", 64); err != nil {
		t.Fatal(err)
	}

	// Where make install puts mossfs and the module.
	layer := filepath.Join(work, "layer")
	mod := filepath.Join(layer, "usr/lib/dracut/modules.d/90mossfs")
	os.MkdirAll(mod, 0o755)
	os.MkdirAll(filepath.Join(layer, "usr/bin"), 0o755)
	run(t, "cp", env.Bins["mossfs"], filepath.Join(layer, "usr/bin/mossfs"))
	run(t, "cp", "-a", filepath.Join(env.Repo, "dist/dracut/90mossfs")+"/.", mod+"/")

	// The reporter, enabled for initrd.target.
	inc := filepath.Join(work, "include")
	writeFile(t, filepath.Join(inc, "usr/lib/kvmtest-report.sh"), []byte(dracutReport))
	writeFile(t, filepath.Join(inc, "usr/lib/systemd/system/kvmtest-report.service"), []byte(dracutReportUnit))
	os.MkdirAll(filepath.Join(inc, "usr/bin"), 0o755)
	run(t, "cp", env.Bins["kvmexit"], filepath.Join(inc, "usr/bin/kvmexit"))
	wants := filepath.Join(inc, "etc/systemd/system/initrd.target.wants")
	os.MkdirAll(wants, 0o755)
	if err := os.Symlink("/usr/lib/systemd/system/kvmtest-report.service", filepath.Join(wants, "kvmtest-report.service")); err != nil {
		t.Fatal(err)
	}

	img := filepath.Join(work, "initrd.img")
	start := time.Now()
	log, err := d.Build(vm.DracutBuild{Kernel: env.Kernel, Layers: []string{layer}, Include: inc, Out: img,
		Modules: []string{"systemd", "systemd-initrd", "dracut-systemd", "base", "rootfs-block", "kernel-modules", "mossfs"}})
	if err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(img); err == nil {
		t.Logf("dracut: %.1fs, initramfs %d MiB (%s)", time.Since(start).Seconds(), st.Size()>>20, d.Versions)
	}
	dir := filepath.Join(env.Work, "dracut")
	os.MkdirAll(dir, 0o755)
	m := &vm.Machine{Kernel: env.Kernel, Initrd: img, Disks: []string{disk}, Dir: dir, KVM: env.KVM,
		Timeout: 10 * time.Minute, MemMB: 1024,
		Append: "root=/dev/vda rootfstype=ext4 ro moss.tx=1 rd.shell=0 rd.emergency=poweroff systemd.show_status=1"}
	res, err := m.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !res.Passed() {
		// How far the systemd initrd got.
		t.Logf("dracut:\n%s\nunits reached:\n%s", log, reached(res.Console))
	}
	report(t, res)
}

// reached lists the console's systemd status lines (Reached target …,
// Finished …, Failed …).
func reached(console string) string {
	var b strings.Builder
	for _, l := range strings.Split(console, "\n") {
		if strings.Contains(l, "Reached target") || strings.Contains(l, "Finished") || strings.Contains(l, "FAILED") || strings.Contains(l, "mossfs") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}
