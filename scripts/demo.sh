#!/usr/bin/env bash
# make demo: mossfs end to end on shipped data (run as root on Debian 12).
#   1. the image format: mkcomposefs-compatible images, byte-exact against upstream checksums;
#   2. the store: import .stone packages and a tree, compose two transactions, list and diff;
#   3. the kernel: mount transaction 1, switch live to 2 under a reader loop, status;
#   4. containers: export transaction 2 as an OCI image, pull it back, mount it as an image.
# Mounts happen in a private mount namespace, so nothing is left behind on the host.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$PWD/bin
SHARED=${MOSSFS_SHARED:-$(cd .. && pwd)/shared}
[ -d "$SHARED/testdata" ] || { echo "demo: shared/ not found at $SHARED (set MOSSFS_SHARED)" >&2; exit 1; }
STONES=$SHARED/testdata/stones
CFS=$SHARED/testdata/composefs
# /var/tmp is on the root filesystem (ext4 here), so images mount file-backed.
work=$(mktemp -d /var/tmp/mossfs-demo.XXXXXX)
trap 'rm -rf "$work"' EXIT
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }

step "1. Images byte-identical to mkcomposefs 1.0.8"
for d in special.dump bigfile.dump longlink.dump; do
  args=()
  [ -f "$CFS/$d.version" ] && v=$(cat "$CFS/$d.version") && args=(--min-version="$v" --max-version="$v")
  got=$("$BIN/mkcomposefs" "${args[@]}" --from-file "$CFS/$d" - | sha256sum | cut -d' ' -f1)
  want=$(cut -d' ' -f1 "$CFS/$d.sha256")
  [ "$got" = "$want" ] && echo "  $d: sha256 $got matches upstream" || { echo "  $d: MISMATCH $got != $want"; exit 1; }
done

step "A directory tree with a hardlink, a symlink, xattrs and a 3 MB file"
tree=$work/tree
mkdir -p "$tree/bin" "$tree/share/doc"
printf '#!/bin/sh\necho hello from mossfs\n' > "$tree/bin/hello"; chmod 755 "$tree/bin/hello"
printf 'mossfs demo\n' > "$tree/share/doc/README"
ln "$tree/share/doc/README" "$tree/share/doc/README.hardlink"
ln -s ../share/doc/README "$tree/bin/readme"
head -c 3000000 /dev/urandom > "$tree/share/blob"
setfattr -n user.demo -v shipped "$tree/share/doc/README"
run "$BIN/mkcomposefs" --digest-store="$work/objects" --print-digest "$tree" "$work/demo.cfs"
run "$BIN/moss-compose" info ls "$work/demo.cfs"
fsck.erofs "$work/demo.cfs" >/dev/null && echo "  fsck.erofs: image is clean"

step "Mount it with the kernel (EROFS + overlayfs over the digest store), read through it"
mkdir -p "$work/mnt"
unshare -m --propagation private bash -euc '
  "$0/mossfs" mount --root "$1/state0" --driver overlay --objects "$1/objects" "$1/demo.cfs" "$1/mnt"
  ls -la "$1/mnt" "$1/mnt/share/doc"
  "$1/mnt/bin/hello"
  echo "readme via symlink: $(cat "$1/mnt/bin/readme")"
  stat -c "%n inode %i links %h" "$1/mnt/share/doc/README" "$1/mnt/share/doc/README.hardlink"
  echo "user.demo = $(getfattr --absolute-names --only-values -n user.demo "$1/mnt/share/doc/README")"
  cmp "$1/mnt/share/blob" "$1/tree/share/blob" && echo "3 MB external file reads back identical"
  "$0/mossfs" umount --root "$1/state0" "$1/mnt"
' "$BIN" "$work"

step "2. The store: import the shipped .stone packages and a tree"
R=$work/state
run "$BIN/moss-compose" import --root "$R" "$STONES/bash-completion-2.11-1-1-x86_64.stone" "$STONES/pineapple-1-1-1-x86_64.stone"
run "$BIN/moss-compose" compose --root "$R" --stone "$STONES/bash-completion-2.11-1-1-x86_64.stone" --stone "$STONES/pineapple-1-1-1-x86_64.stone" --tree "$tree:lib/demo"
echo 'version 2' > "$tree/share/doc/VERSION"
run "$BIN/moss-compose" compose --root "$R" --from 1 --remove pineapple --tree "$tree:lib/demo"
echo "  a conflicting package is refused before anything is written:"
"$BIN/moss-compose" compose --root "$R" --from 1 --stone "$STONES/italian-pizza-1-1-1-x86_64.stone" 2>&1 | sed 's/^/    /' || true
run "$BIN/moss-compose" state list --root "$R"
run "$BIN/moss-compose" state diff --root "$R" 1 2
run "$BIN/moss-compose" state show --root "$R" 2 --owner share/bash-completion/bash_completion
run "$BIN/moss-compose" state verify --root "$R"
run "$BIN/moss-compose" gc --root "$R" --dry-run

step "3. Mount transaction 1, switch live to 2 while readers run, status"
mkdir -p "$work/usr"
unshare -m --propagation private bash -euc '
  B=$0 W=$1 R=$1/state
  # A scratch tmpfs above the target, so the target is not the namespace root (kernel.md §1.1).
  mount -t tmpfs demo "$W/usr"; mkdir "$W/usr/usr"; T=$W/usr/usr
  "$B/mossfs" mount --root "$R" 1 "$T"
  echo "mounted: .stateID = $(cat "$T/.stateID")"
  ( ok=0 bad=0; end=$((SECONDS+3))
    while [ $SECONDS -lt $end ]; do
      if cat "$T/.stateID" "$T/share/bash-completion/bash_completion" >/dev/null 2>&1; then ok=$((ok+1)); else bad=$((bad+1)); fi
    done; echo "reader loop: $ok reads ok, $bad failed" ) &
  sleep 1
  "$B/mossfs" switch --root "$R" --target "$T" 2
  echo "switched: .stateID = $(cat "$T/.stateID")"
  wait
  "$B/mossfs" status --root "$R"
  echo "removing the mounted, active transaction is refused:"
  "$B/moss-compose" state remove --root "$R" 2 2>&1 | sed "s/^/  /" || true
  echo "mounts at the target: $(grep -c " $T " /proc/self/mountinfo)"
  "$B/mossfs" umount --root "$R" "$T"
  echo; echo "The same transaction through the FUSE driver (what a kernel without data-only overlay layers, or a user who is not root, gets):"
  mkdir -p "$W/fuse"
  "$B/mossfs" mount --root "$R" --driver fuse 2 "$W/fuse"
  echo "FUSE: .stateID = $(cat "$W/fuse/.stateID"), $(find "$W/fuse" | wc -l) entries"
  "$B/mossfs" status --root "$R"
  "$B/mossfs" umount --root "$R" "$W/fuse"
' "$BIN" "$work"

step "4. Containers: transaction 2 out as an OCI image and back in as a container image"
# An OCI layout needs no registry; the same commands take docker://, oci-archive:,
# docker-archive: and containers-storage: references. Export twice: same manifest digest.
cat > "$work/policy.json" <<'POLICY'
{"default": [{"type": "insecureAcceptAnything"}]}
POLICY
run "$BIN/moss-compose" export --root "$R" 2 "oci:$work/layout:demo"
first=$(sha256sum "$work/layout/index.json" | cut -d' ' -f1)
rm -rf "$work/layout"; "$BIN/moss-compose" export --root "$R" 2 "oci:$work/layout:demo" >/dev/null 2>&1
echo "exported twice: index.json $( [ "$first" = "$(sha256sum "$work/layout/index.json" | cut -d' ' -f1)" ] && echo identical || echo DIFFERENT)"
run "$BIN/moss-compose" image pull --root "$R" --signature-policy "$work/policy.json" --name demo "oci:$work/layout:demo"
echo "  pulling it again fetches nothing:"
"$BIN/moss-compose" image pull --root "$R" --signature-policy "$work/policy.json" --name demo "oci:$work/layout:demo" 2>&1 | sed 's/^/    /'
run "$BIN/moss-compose" image list --root "$R"
mkdir -p "$work/img"
unshare -m --propagation private bash -euc '
  B=$0 W=$1 R=$1/state
  "$B/mossfs" mount --root "$R" --image demo "$W/img"
  echo "container image mounted: usr/.stateID = $(cat "$W/img/usr/.stateID"), bin -> $(readlink "$W/img/bin")"
  "$B/mossfs" umount --root "$R" "$W/img"
' "$BIN" "$work"
echo; echo "demo: done"
