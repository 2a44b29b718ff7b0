#!/usr/bin/env bash
# Installs what mossfs's tests and demo need on Debian 12 (as root). Idempotent.
set -euo pipefail
pkgs=(erofs-utils fsverity attr fuse3 zstd e2fsprogs cpio xz-utils qemu-system-x86 busybox-static kmod util-linux xfsprogs make systemd docker-registry skopeo podman runc conmon catatonit golang-github-containers-common umoci debootstrap sqlite3 libglib2.0-bin shared-mime-info)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then echo "install-deps: need root to install: ${missing[*]}" >&2; exit 1; fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
command -v go >/dev/null || { echo "install-deps: Go toolchain not found (expected /usr/local/go/bin/go)" >&2; exit 1; }
go mod download
