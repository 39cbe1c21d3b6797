#!/bin/sh
# Fetch one of Debian bookworm's 6.1 kernels and its real System.map into a
# cache outside the repository, once; later calls reuse it.
#
#   scripts/fetch-debian-kernel.sh [--flavour 686|amd64] [CACHE_DIR]
#                                  (default flavour 686, the i386 non-PAE kernel;
#                                   default CACHE_DIR ~/.cache/gdbfault/kernels)
#
# Prints the directory holding vmlinuz, System.map and config:
#   686   -> CACHE_DIR/debian-6.1.0-N-686     (i386 kernel, from the i386 archive)
#   amd64 -> CACHE_DIR/debian-6.1.0-N-amd64   (x86_64 kernel, from the amd64 archive)
# The flavour may also come from GDBFAULT_KERNEL_FLAVOUR.
#
# The -unsigned package's System.map is a one-line stub; the real one is in
# linux-image-*-FLAVOUR-dbg (686 ~760 MB, amd64 ~850 MB .deb). Only System.map
# is extracted from it (vmlinux stays out: 300+ MB), and the .deb is deleted
# afterwards. apt runs with a private state directory inside CACHE_DIR
# (package lists of the flavour's architecture from the host's configured
# Debian sources; the host's apt state is not touched, no
# `dpkg --add-architecture` needed).
set -eu

FLAVOUR=${GDBFAULT_KERNEL_FLAVOUR:-686}
while [ $# -gt 0 ]; do
    case $1 in
        --flavour|--flavor) [ $# -ge 2 ] || { echo "fetch-debian-kernel: $1 needs a value (686 or amd64)" >&2; exit 2; }
                            FLAVOUR=$2; shift 2 ;;
        --flavour=*|--flavor=*) FLAVOUR=${1#*=}; shift ;;
        -*) echo "fetch-debian-kernel: unknown option $1" >&2; exit 2 ;;
        *) break ;;
    esac
done
case $FLAVOUR in
    686) ARCH=i386 ;;
    amd64) ARCH=amd64 ;;
    *) echo "fetch-debian-kernel: unknown flavour '$FLAVOUR' (686 or amd64)" >&2; exit 2 ;;
esac

CACHE=${1:-${GDBFAULT_KERNEL_CACHE:-$HOME/.cache/gdbfault/kernels}}
mkdir -p "$CACHE"
CACHE=$(cd "$CACHE" && pwd)
# One private apt state per architecture (686 keeps the directory it always had).
if [ "$ARCH" = i386 ]; then APT="$CACHE/apt"; else APT="$CACHE/apt-$ARCH"; fi
mkdir -p "$APT/lists/partial" "$APT/archives/partial"
OPTS="-o APT::Architecture=$ARCH -o APT::Architectures::=$ARCH -o Dir::State::Lists=$APT/lists
      -o Dir::Cache=$APT -o Dir::State::status=/dev/null -o Debug::NoLocking=1"

# One fetch per flavour at a time: a second caller (another test run, another
# engineer sharing the cache) waits here, then finds the finished kernel below
# instead of deleting the first one's half-extracted directory.
if command -v flock >/dev/null 2>&1; then
    exec 9>"$CACHE/.fetch-$FLAVOUR.lock"
    flock 9
fi

# A cached kernel is good enough: no network at all on later runs. Only
# debian-6.1.0-<number>-FLAVOUR itself (not -cloud-amd64, -rt-amd64, -686-pae).
for d in "$CACHE"/debian-6.1.0-*-"$FLAVOUR"; do
    expr "$(basename "$d")" : "debian-6\.1\.0-[0-9][0-9]*-$FLAVOUR\$" >/dev/null || continue
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
PKG=$(apt-cache $OPTS search "^linux-image-6\\.1\\.0-[0-9]+-$FLAVOUR-unsigned\$" | awk '{print $1}' |
      sort -t- -k4,4n | tail -1)
[ -n "$PKG" ] || { log "no linux-image-6.1.0-N-$FLAVOUR-unsigned in the $ARCH package lists"; exit 1; }
ABI=$(echo "$PKG" | sed "s/^linux-image-\\(6\\.1\\.0-[0-9]*-$FLAVOUR\\)-unsigned\$/\\1/")
DBG="linux-image-$ABI-dbg"
log "downloading $PKG and $DBG"
DL="$CACHE/dl"
mkdir -p "$DL"
# shellcheck disable=SC2086
(cd "$DL" && apt-get -q $OPTS download "$PKG" "$DBG" >&2)
t1=$(date +%s)
SIZE=$(du -cm "$DL"/*.deb | tail -1 | cut -f1)
OUT="$CACHE/debian-$ABI"
TMP="$OUT.tmp"
rm -rf "$TMP"
mkdir -p "$TMP/x"
dpkg-deb -x "$DL/${PKG}"_*_"$ARCH".deb "$TMP/x"
cp "$TMP/x/boot/vmlinuz-$ABI" "$TMP/vmlinuz"
cp "$TMP/x/boot/config-$ABI" "$TMP/config"
rm -rf "$TMP/x"
mkdir -p "$TMP/x"
log "extracting System.map from $DBG (decompresses the whole .deb: a minute or two)"
dpkg-deb --fsys-tarfile "$DL/${DBG}"_*_"$ARCH".deb |
    tar -x -C "$TMP/x" "./usr/lib/debug/boot/System.map-$ABI"
mv "$TMP/x/usr/lib/debug/boot/System.map-$ABI" "$TMP/System.map"
rm -rf "$TMP/x" "$DL"
t2=$(date +%s)
echo "download $((t1 - t0)) s ($SIZE MB), extract $((t2 - t1)) s" > "$TMP/FETCH-TIMES"
rm -rf "$OUT"
mv "$TMP" "$OUT"
log "ready in $OUT (download $((t1 - t0)) s, $SIZE MB; extract $((t2 - t1)) s)"
echo "$OUT"
