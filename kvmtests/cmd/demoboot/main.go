// Command demoboot (make demo-boot) shows mossfs at boot in a VM with a
// real 6.12 kernel (fs-verity, EROFS, overlayfs), the way a machine would
// go through it:
//
//  1. install boot: on the machine's root filesystem, moss-compose composes
//     two transactions of a small /usr (busybox), signs them with a fresh
//     key, and mossfs bls writes Boot Loader Specification entries;
//  2. the host plays boot loader: it reads loader.conf's default entry from
//     the disk and boots its kernel command line (moss.tx, moss.digest,
//     moss.fallback) with the public key in the initramfs;
//  3. real boot: the initramfs runs mossfs boot (checks digest and
//     signature, mounts the transaction at /sysroot/usr with verity) and
//     switch_root's into the root filesystem, whose init — run by the
//     transaction's /usr/bin/sh — prints what it sees;
//  4. the image of the default transaction is tampered with on the disk and
//     the same entry boots again: mossfs boot falls back to transaction 1.
package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/mossfs/mossfs/kvmtests/vm"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "demo-boot:", err)
		os.Exit(1)
	}
}

func step(format string, a ...any) { fmt.Printf("\n### "+format+"\n", a...) }

var applets = []string{"sh", "cat", "grep", "ls", "tr", "find", "head", "mount", "uname", "wc", "readlink"}

func run() error {
	work, err := os.MkdirTemp("", "mossfs-demo-boot-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	step("Preparing: kernel, static binaries")
	env, err := vm.NewEnv(work)
	if err != nil {
		return err
	}
	fmt.Printf("kernel %s (cached under kvmtests/.cache), QEMU %s\n", env.Kernel.Package, map[bool]string{true: "KVM", false: "TCG"}[env.KVM])
	for _, b := range []struct{ name, pkg string }{
		{"kvmexit", "./kvmtests/cmd/kvmexit"}, {"mossfs", "./cmd/mossfs"}, {"moss-compose", "./cmd/moss-compose"},
	} {
		if err := env.Build(b.name, b.pkg); err != nil {
			return err
		}
	}

	// The machine's root filesystem: /etc and /var of its own, an empty
	// /usr mount point, merged-/usr symlinks, and the source of /usr.
	root := filepath.Join(work, "rootfs")
	for _, d := range []string{"usr", "etc", "var/log", "proc", "sys", "dev", "run", "tmp", "boot/loader/entries", "src/usr/bin", "src/usr/lib"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			return err
		}
	}
	for l, t := range map[string]string{"bin": "usr/bin", "sbin": "usr/bin", "lib": "usr/lib"} {
		os.Symlink(t, filepath.Join(root, l))
	}
	os.WriteFile(filepath.Join(root, "etc", "hostname"), []byte("mossfs-demo\n"), 0o644)
	bin := filepath.Join(root, "src", "usr", "bin")
	if err := copyFile("/bin/busybox", filepath.Join(bin, "busybox"), 0o755); err != nil {
		return err
	}
	if err := copyFile(env.Bins["kvmexit"], filepath.Join(bin, "kvmexit"), 0o755); err != nil {
		return err
	}
	for _, a := range applets {
		os.Symlink("busybox", filepath.Join(bin, a))
	}
	os.WriteFile(filepath.Join(root, "demo-init"), []byte(demoInit), 0o755)
	disk := filepath.Join(work, "root.ext4")
	if err := vm.MakeExt4(disk, root, "root", 128); err != nil {
		return err
	}

	step("Boot 1 (install): compose two transactions, sign them, write BLS entries")
	res, err := env.Run(context.Background(), vm.Boot{Name: "install", Body: installBody, Disks: []string{disk}})
	if err != nil {
		return err
	}
	vmTime := res.Duration
	printResults(res)
	if !res.Passed() {
		return fmt.Errorf("install boot failed (exit %d):\n%s", res.ExitCode, tail(res.Console, 30))
	}

	step("The host plays boot loader: default entry from loader.conf")
	conf, err := debugfsCat(disk, "/boot/loader/loader.conf")
	if err != nil {
		return err
	}
	fmt.Print("loader.conf:\n" + indent(conf))
	var def string
	for _, l := range strings.Split(conf, "\n") {
		if f := strings.Fields(l); len(f) == 2 && f[0] == "default" {
			def = f[1]
		}
	}
	entry, err := debugfsCat(disk, "/boot/loader/entries/"+def)
	if err != nil {
		return err
	}
	fmt.Printf("%s:\n%s", def, indent(entry))
	var options string
	for _, l := range strings.Split(entry, "\n") {
		if o, ok := strings.CutPrefix(l, "options "); ok {
			options = o
		}
	}
	pub, err := debugfsCat(disk, "/boot/demo.key.pub")
	if err != nil {
		return err
	}

	step("Boot 2: kernel command line from the entry; initramfs runs mossfs boot, then switch_root")
	res, err = env.Run(context.Background(), vm.Boot{Name: "boot", Body: bootBody, Disks: []string{disk},
		Append: options, Files: map[string][]byte{"etc/mossfs.pub": []byte(pub)}})
	if err != nil {
		return err
	}
	vmTime += res.Duration
	printResults(res)
	if !res.Passed() {
		return fmt.Errorf("boot failed (exit %d):\n%s", res.ExitCode, tail(res.Console, 40))
	}

	step("Boot 3: the same entry after transaction 2's image was tampered with on disk")
	var img string
	for _, f := range strings.Fields(options) {
		if h, ok := strings.CutPrefix(f, "moss.digest=sha256:"); ok {
			img = "/.moss/images/" + h
		}
	}
	if err := tamper(disk, img, work); err != nil {
		return err
	}
	fmt.Printf("flipped one byte of %s (debugfs, as someone with the disk could)\n", img)
	res, err = env.Run(context.Background(), vm.Boot{Name: "fallback", Body: bootBody, Disks: []string{disk},
		Append: options, Files: map[string][]byte{"etc/mossfs.pub": []byte(pub)}})
	if err != nil {
		return err
	}
	vmTime += res.Duration
	printResults(res)
	if !res.Passed() {
		return fmt.Errorf("fallback boot failed (exit %d):\n%s", res.ExitCode, tail(res.Console, 40))
	}
	fmt.Printf("\ndemo-boot: done (3 boots, %.1fs of VM time)\n", vmTime.Seconds())
	return nil
}

const installBody = `mkdir -p /sysroot && mount -t ext4 /dev/vda /sysroot || rc=1
S=/sysroot/.moss
{
set -e
echo "mossfs demo, release 1" > /sysroot/src/usr/lib/release
echo "$ moss-compose compose --root $S --tree /sysroot/src/usr"
moss-compose compose --root $S --tree /sysroot/src/usr -q
echo "mossfs demo, release 2" > /sysroot/src/usr/lib/release
echo "$ moss-compose compose --root $S --tree /sysroot/src/usr --from 1"
moss-compose compose --root $S --tree /sysroot/src/usr --from 1 -q
echo "$ moss-compose keygen /sysroot/boot/demo.key"
moss-compose keygen /sysroot/boot/demo.key
echo "$ moss-compose state sign 1 2 --key /sysroot/boot/demo.key"
moss-compose state sign --root $S --key /sysroot/boot/demo.key 1 2
echo "$ mossfs bls /sysroot/boot/loader/entries --linux /vmlinuz --initrd /initrd.img"
mossfs bls /sysroot/boot/loader/entries --root $S --linux /vmlinuz --initrd /initrd.img --options "root=LABEL=root rw"
echo "$ moss-compose state list"
moss-compose state list --root $S
} >&3 2>&3 || rc=1
umount /sysroot || rc=1`

const bootBody = `echo "kernel command line: $(cat /proc/cmdline)" >&3
mkdir -p /sysroot && mount -t ext4 /dev/vda /sysroot || rc=1
echo "$ mossfs boot --pubkey /etc/mossfs.pub" >&3
if /bin/mossfs boot --pubkey /etc/mossfs.pub 2>&3; then
  mount --move /proc /sysroot/proc
  mount --move /sys /sysroot/sys
  mount --move /dev /sysroot/dev
  echo "$ switch_root /sysroot /usr/bin/sh /demo-init" >&3
  exec switch_root /sysroot /usr/bin/sh /demo-init
fi
rc=1`

// demoInit runs after switch_root, from the root filesystem, with the
// transaction's busybox as /usr/bin/sh.
const demoInit = `#!/usr/bin/sh
export PATH=/usr/bin
{
echo "== now running /demo-init (PID $$) on the root filesystem, shell from the transaction"
echo "== /usr is transaction $(cat /usr/.stateID): $(cat /usr/lib/release)"
echo "== the mount at /usr:"
grep ' /usr ' /proc/self/mountinfo
echo "== /etc/hostname comes from the root filesystem: $(cat /etc/hostname)"
echo "== /usr/bin: $(ls /usr/bin | tr '\n' ' ')"
n=0; bad=0
for f in $(find /usr -type f); do n=$((n+1)); cat "$f" > /dev/null || bad=$((bad+1)); done
echo "== read all $n files of /usr through overlayfs: $bad failed"
echo "KVMTEST-END rc=$bad"
} >&3 2>&3
exec /usr/bin/kvmexit $bad`

func printResults(res *vm.Result) {
	for _, l := range strings.Split(strings.TrimRight(res.Results, "\n"), "\n") {
		if strings.HasPrefix(l, vm.BeginMarker) || strings.HasPrefix(l, "uptime ") {
			continue
		}
		fmt.Println("  " + l)
	}
	fmt.Printf("  (boot took %.1fs, QEMU exit %d)\n", res.Duration.Seconds(), res.ExitCode)
}

func debugfsCat(img, path string) (string, error) {
	out, err := exec.Command("debugfs", "-R", "cat "+path, img).Output()
	if err != nil || len(out) == 0 {
		return "", fmt.Errorf("debugfs cat %s in %s: %v", path, img, err)
	}
	return string(out), nil
}

func copyFile(src, dst string, mode os.FileMode) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, data, mode)
}

func indent(s string) string {
	var b strings.Builder
	for _, l := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		b.WriteString("    " + l + "\n")
	}
	return b.String()
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// tamper flips a byte in the middle of a file inside the ext4 image,
// replacing the file through debugfs (no mount needed).
func tamper(disk, path, work string) error {
	local := filepath.Join(work, "tampered")
	if out, err := exec.Command("debugfs", "-R", "dump "+path+" "+local, disk).CombinedOutput(); err != nil {
		return fmt.Errorf("debugfs dump %s: %v: %s", path, err, out)
	}
	data, err := os.ReadFile(local)
	if err != nil || len(data) == 0 {
		return fmt.Errorf("tamper %s: %v (%d bytes)", path, err, len(data))
	}
	data[len(data)/2] ^= 0xff
	if err := os.WriteFile(local, data, 0o644); err != nil {
		return err
	}
	for _, cmd := range []string{"rm " + path, "write " + local + " " + path} {
		if out, err := exec.Command("debugfs", "-w", "-R", cmd, disk).CombinedOutput(); err != nil {
			return fmt.Errorf("debugfs %s: %v: %s", cmd, err, out)
		}
	}
	return nil
}
