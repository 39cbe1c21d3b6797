#!/bin/sh
# fetch-header.sh — fetch QEMU's qemu-plugin.h for the *installed* QEMU.
#
# The header is not shipped by any Debian binary package, so we take it from
# Debian's qemu source package of exactly the installed version:
#   1. add a deb-src entry derived from the machine's existing (Debian) apt
#      sources, in its own file under sources.list.d (existing files untouched);
#   2. apt-get update;
#   3. apt-get source --download-only qemu=<installed source version> into a
#      cache dir (build/src);
#   4. extract ONLY include/qemu/qemu-plugin.h from the orig tarball into
#      build/include/ (QEMU's header is never committed).
#
# Environment: BUILD (default: <script dir>/build), QEMU_BIN_PKG
# (default qemu-system-x86), DEBSRC_FILE (default
# /etc/apt/sources.list.d/gdbfault-deb-src.sources).
# Exit status 0 when build/include/qemu-plugin.h exists afterwards; otherwise
# one line on stderr naming what is missing.
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
BUILD=${BUILD:-$HERE/build}
PKG=${QEMU_BIN_PKG:-qemu-system-x86}
DEBSRC_FILE=${DEBSRC_FILE:-/etc/apt/sources.list.d/gdbfault-deb-src.sources}
INC=$BUILD/include
SRC=$BUILD/src

die() { echo "fetch-header: $*" >&2; exit 1; }

[ -f "$INC/qemu-plugin.h" ] && exit 0

command -v dpkg-query >/dev/null 2>&1 || die "missing qemu-plugin.h: dpkg-query not found (not a Debian system?); put QEMU's include/qemu/qemu-plugin.h in $INC/ by hand"
VER=$(dpkg-query -W -f='${source:Version}' "$PKG" 2>/dev/null) || true
SRCPKG=$(dpkg-query -W -f='${source:Package}' "$PKG" 2>/dev/null) || true
[ -n "$VER" ] && [ -n "$SRCPKG" ] || die "missing qemu-plugin.h: package $PKG is not installed (apt-get install qemu-system-x86)"
UPVER=${VER#*:}; UPVER=${UPVER%-*}          # 1:7.2+dfsg-7+deb12u18 -> 7.2+dfsg

mkdir -p "$SRC" "$INC"

have_orig() { ls "$SRC"/"${SRCPKG}_${UPVER}".orig.tar.* >/dev/null 2>&1; }

if ! have_orig; then
    if [ "$(id -u)" != 0 ]; then
        die "missing qemu-plugin.h: fetching the $SRCPKG $VER source needs root (run: sudo make -C qemu/plugin header)"
    fi
    # Derive deb-src entries from the enabled Debian 'deb' entries (one-line
    # .list files and deb822 .sources files). Only Debian archives are used:
    # third-party repositories often carry no Sources index.
    python3 - "$DEBSRC_FILE" <<'PY'
import glob, os, re, sys
out = sys.argv[1]
entries = []   # (uris, suites, components, signed_by)
def debian(uri): return re.search(r"debian", uri) and "nodesource" not in uri and "google" not in uri
files = ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*.list"))
for f in files:
    if not os.path.isfile(f): continue
    for line in open(f, encoding="utf-8", errors="replace"):
        line = line.split("#", 1)[0].strip()
        m = re.match(r"^(deb|deb-src)\s+(\[[^\]]*\]\s+)?(\S+)\s+(\S+)\s*(.*)$", line)
        if not m: continue
        opts = m.group(2) or ""
        sb = re.search(r"signed-by=(\S+?)[\s\]]", opts + " ")
        entries.append((m.group(1), [m.group(3)], [m.group(4)], m.group(5).split(), sb.group(1) if sb else None))
for f in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
    if os.path.abspath(f) == os.path.abspath(out): continue
    text = open(f, encoding="utf-8", errors="replace").read()
    for para in re.split(r"\n\s*\n", text):
        fields, key = {}, None
        for raw in para.splitlines():
            if raw.lstrip().startswith("#"): continue
            if raw[:1] in " \t" and key:
                fields[key] += " " + raw.strip(); continue
            if ":" in raw:
                key, val = raw.split(":", 1); key = key.strip().lower(); fields[key] = val.strip()
        if fields.get("enabled", "yes").lower() == "no" or "types" not in fields: continue
        for t in fields["types"].split():
            entries.append((t, fields.get("uris", "").split(), fields.get("suites", "").split(),
                            fields.get("components", "").split(), fields.get("signed-by")))
have_src = {(u, s) for t, us, ss, _, _ in entries if t == "deb-src" for u in us for s in ss}
paras = []
for t, us, ss, cs, sb in entries:
    if t != "deb": continue
    us = [u for u in us if debian(u)]
    ss = [s for s in ss if not all((u, s) in have_src for u in us)]
    if not us or not ss: continue
    p = ["Types: deb-src", "URIs: " + " ".join(us), "Suites: " + " ".join(ss), "Components: " + " ".join(cs)]
    if sb and "\n" not in sb: p.append("Signed-By: " + sb)
    paras.append("\n".join(p))
if not paras and not have_src:
    sys.exit("fetch-header: missing qemu-plugin.h: no Debian 'deb' source entry found to derive a deb-src entry from")
if paras:
    body = "# Written by gdbfault qemu/plugin/fetch-header.sh: deb-src twins of the\n# existing Debian deb entries (needed for apt-get source qemu).\n\n" + "\n\n".join(paras) + "\n"
    old = open(out).read() if os.path.exists(out) else None
    if old != body:
        with open(out, "w") as fh: fh.write(body)
PY
    apt-get update -qq >/dev/null 2>&1 || apt-get update -qq || die "missing qemu-plugin.h: apt-get update failed"
    (cd "$SRC" && apt-get source -qq --download-only "$SRCPKG=$VER") >/dev/null 2>&1 \
        || (cd "$SRC" && apt-get source --download-only "$SRCPKG=$VER") \
        || die "missing qemu-plugin.h: apt-get source --download-only $SRCPKG=$VER failed"
fi
ORIG=$(ls "$SRC"/"${SRCPKG}_${UPVER}".orig.tar.* 2>/dev/null | head -n1)
[ -n "$ORIG" ] || die "missing qemu-plugin.h: no orig tarball for $SRCPKG $VER in $SRC"
TMP=$(mktemp -d "$BUILD/.hdr.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
# Extract one member only (the tarball is ~100 MB unpacked).
tar -xf "$ORIG" -C "$TMP" --wildcards --no-anchored '*/include/qemu/qemu-plugin.h' \
    || die "missing qemu-plugin.h: not found in $ORIG"
H=$(find "$TMP" -name qemu-plugin.h | head -n1)
[ -n "$H" ] || die "missing qemu-plugin.h: not found in $ORIG"
grep -q QEMU_PLUGIN_VERSION "$H" || die "missing qemu-plugin.h: $H does not look like QEMU's plugin header"
{ echo "/* Extracted from $(basename "$ORIG") ($SRCPKG $VER) by fetch-header.sh; not part of gdbfault. */"; cat "$H"; } > "$INC/qemu-plugin.h.tmp"
mv "$INC/qemu-plugin.h.tmp" "$INC/qemu-plugin.h"
echo "fetch-header: $INC/qemu-plugin.h from $SRCPKG $VER"
