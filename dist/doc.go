// Package dist holds what a distribution installs besides the binaries and
// tests that it installs correctly:
//
//	dist/systemd/mossfs-triggers.service  system triggers of the booted transaction, once per transaction
//	dist/systemd/80-mossfs.preset          enables it
//	dist/dracut/90mossfs/                  dracut module: mossfs and mossfs-boot.service in the initramfs
//
// `make install` (DESTDIR, PREFIX and the *DIR variables of the Makefile)
// puts them, the binaries, the man pages and the shell completions where
// Debian and AerynOS look for them. The tests run make install into an
// empty directory and build a real initramfs with Debian's dracut.
package dist
