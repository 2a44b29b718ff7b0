// Package guest holds the tests that run inside the kvmtests VM (a Debian
// 6.12 kernel with fs-verity, EROFS and overlayfs). The host harness in
// kvmtests builds them with `go test -c`, prepares the disk they read, boots
// the VM and turns their results into host subtests. Outside the VM every
// test skips.
package guest
