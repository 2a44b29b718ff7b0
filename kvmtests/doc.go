// Package kvmtests boots a real Debian 6.12 kernel (fs-verity, EROFS,
// overlayfs) under QEMU and runs mossfs's kernel-facing tests inside it.
//
// Layout: the host side (kernel fetch and cache, module dependencies, newc
// initramfs, ext4 disks, QEMU, result parsing) is kvmtests/vm; the tests
// that run in the guest are kvmtests/guest (built with go test -c); the
// guest ends the VM through QEMU's isa-debug-exit (kvmtests/debugexit,
// kvmtests/cmd/kvmexit). make demo-boot runs kvmtests/cmd/demoboot.
//
// Boots per run (about 15–25 s each under TCG, more on a loaded host):
//
//	TestGuest         1 boot: fs-verity enable/measure vs userspace and CLI,
//	                  overlay verity=require (good, tampered, unverified objects),
//	                  mossfs boot scenarios through --cmdline, live mossfs switch
//	TestPackagesInVM  1 boot: the fsverity, cas, overlay and mounttuck suites
//	TestPowerCut      4 boots: 3 cuts in the middle of a compose, each checked
//	                  by the next boot; the last also boots from /proc/cmdline
//	TestDracutBoot    1 boot, make kvmtest only (MOSSFS_KVM_DRACUT=1): a systemd
//	                  initramfs built by Debian's dracut with 90mossfs mounts
//	                  the transaction named by moss.tx= at /sysroot/usr
//
// The kernel is resolved through its metapackage (apt-cache depends) and
// cached under kvmtests/.cache/<versioned package>/ (vmlinuz and the needed
// modules, decompressed); without network the newest cached one is used.
// Tests skip only when QEMU or the kernel cannot be obtained.
//
// Environment: MOSSFS_KVM=1 uses -enable-kvm instead of TCG;
// MOSSFS_KVM_KEEP=1 keeps the work directory (initramfs, disks, console.log,
// results.log per boot); MOSSFS_KVM_KERNEL_META picks another kernel
// metapackage.
package kvmtests
