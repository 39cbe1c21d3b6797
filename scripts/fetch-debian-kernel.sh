#!/bin/sh
# Fetch Debian bookworm's i386 (686, non-PAE) kernel and its real System.map
# into a cache outside the repository, once; later calls reuse it.
#
#   scripts/fetch-debian-kernel.sh [CACHE_DIR]     (default ~/.cache/gdbfault/kernels)
#
# Prints the directory holding vmlinuz, System.map and config.
#
# The -unsigned package's System.map is a one-line stub; the real one is in
# linux-image-*-686-dbg (~760 MB .deb). Only System.map is extracted from it
# (vmlinux stays out: 300 MB), and the .deb is deleted afterwards. apt runs
# with a private state directory inside CACHE_DIR (i386 package lists from the
# host's configured Debian sources; the host's apt state is not touched, no
# `dpkg --add-architecture` needed).
set -eu

CACHE=${1:-${GDBFAULT_KERNEL_CACHE:-$HOME/.cache/gdbfault/kernels}}
mkdir -p "$CACHE"
CACHE=$(cd "$CACHE" && pwd)
APT="$CACHE/apt"
mkdir -p "$APT/lists/partial" "$APT/archives/partial"
OPTS="-o APT::Architecture=i386 -o APT::Architectures::=i386 -o Dir::State::Lists=$APT/lists
      -o Dir::Cache=$APT -o Dir::State::status=/dev/null -o Debug::NoLocking=1"

# A cached kernel is good enough: no network at all on later runs.
for d in "$CACHE"/debian-6.1.0-*-686; do
    if [ -s "$d/vmlinuz" ] && [ -s "$d/System.map" ] && [ "$(wc -l < "$d/System.map")" -gt 1000 ]; then
        echo "$d"
        exit 0
    fi
done

log() { echo "fetch-debian-kernel: $*" >&2; }
t0=$(date +%s)
# shellcheck disable=SC2086
apt-get -q $OPTS update >&2 || log "apt-get update reported errors (continuing if bookworm's lists came in)"
# shellcheck disable=SC2086
PKG=$(apt-cache $OPTS search '^linux-image-6\.1\.0-[0-9]+-686-unsigned$' | awk '{print $1}' |
      sort -t- -k4,4n | tail -1)
[ -n "$PKG" ] || { log "no linux-image-6.1.0-N-686-unsigned in the i386 package lists"; exit 1; }
ABI=$(echo "$PKG" | sed 's/^linux-image-\(6\.1\.0-[0-9]*-686\)-unsigned$/\1/')
DBG="linux-image-$ABI-dbg"
log "downloading $PKG and $DBG"
DL="$CACHE/dl"
mkdir -p "$DL"
# shellcheck disable=SC2086
(cd "$DL" && apt-get -q $OPTS download "$PKG" "$DBG" >&2)
t1=$(date +%s)
OUT="$CACHE/debian-$ABI"
TMP="$OUT.tmp"
rm -rf "$TMP"
mkdir -p "$TMP/x"
dpkg-deb -x "$DL/${PKG}"_*_i386.deb "$TMP/x"
cp "$TMP/x/boot/vmlinuz-$ABI" "$TMP/vmlinuz"
cp "$TMP/x/boot/config-$ABI" "$TMP/config"
rm -rf "$TMP/x"
mkdir -p "$TMP/x"
log "extracting System.map from $DBG (decompresses the whole .deb: a minute or two)"
dpkg-deb --fsys-tarfile "$DL/${DBG}"_*_i386.deb |
    tar -x -C "$TMP/x" "./usr/lib/debug/boot/System.map-$ABI"
mv "$TMP/x/usr/lib/debug/boot/System.map-$ABI" "$TMP/System.map"
rm -rf "$TMP/x" "$DL"
t2=$(date +%s)
echo "download $((t1 - t0)) s, extract $((t2 - t1)) s" > "$TMP/FETCH-TIMES"
rm -rf "$OUT"
mv "$TMP" "$OUT"
log "ready in $OUT (download $((t1 - t0)) s, extract $((t2 - t1)) s)"
echo "$OUT"
