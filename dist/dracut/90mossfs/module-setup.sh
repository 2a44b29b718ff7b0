#!/bin/bash
# dracut module: mossfs boot in the initramfs. Installs mossfs, the kernel
# modules it mounts with, and mossfs-boot.service (enabled for initrd.target;
# it acts only when the command line names a transaction: moss.tx= or
# moss.fstx=).

check() {
    require_binaries mossfs || return 1
    return 0
}

depends() {
    echo systemd
    return 0
}

installkernel() {
    # erofs and overlayfs mount the transaction; loop is the fallback for
    # images whose file system cannot back an EROFS mount directly.
    hostonly='' instmods erofs overlay loop
}

install() {
    inst_binary "$(find_binary mossfs)" /usr/bin/mossfs
    inst_simple "$moddir/mossfs-boot.service" "$systemdsystemunitdir/mossfs-boot.service"
    $SYSTEMCTL -q --root "$initdir" enable mossfs-boot.service
}
