// Package kvmtests boots a real Debian 6.12 kernel (fs-verity, EROFS,
// overlayfs) under QEMU and runs mossfs's kernel-facing tests inside it: the
// tests themselves live in kvmtests/guest (built with go test -c), the host
// side (kernel fetch and cache, initramfs, disks, QEMU) in kvmtests/vm.
// Tests skip only when QEMU or the kernel cannot be obtained.
package kvmtests
