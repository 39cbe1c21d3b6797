#!/usr/bin/env bash
# Install what gdbfault needs on a Debian machine, skipping what is there:
# QEMU (i386 and x86_64, TCG: Debian's qemu-system-x86 brings both), a
# 32-bit-capable gcc, gdb, patch, GRUB's i386 images and genext2fs; then the
# Python package.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

need=()
# qemu-system-i386 runs i386 kernels, qemu-system-x86_64 the x86_64 ones
if ! command -v qemu-system-i386 >/dev/null || ! command -v qemu-system-x86_64 >/dev/null; then
  need+=(qemu-system-x86)
fi
command -v gdb >/dev/null || need+=(gdb)
command -v patch >/dev/null || need+=(patch)
command -v make >/dev/null || need+=(make)
command -v objdump >/dev/null || need+=(binutils)
# Kernels you bring: GRUB boots images older than boot protocol 2.02, and
# pre-initramfs kernels get an ext2 initrd.
[ -f /usr/lib/grub/i386-pc/lnxboot.img ] || need+=(grub-pc-bin)
command -v genext2fs >/dev/null || need+=(genext2fs)
# qemu-img: the qcow2 file that keeps the old-kernel replay's snapshot at the workload's entry.
command -v qemu-img >/dev/null || need+=(qemu-utils)
if ! echo 'int main(void){return 0;}' | gcc -m32 -x c -o /dev/null - >/dev/null 2>&1; then
  need+=(gcc-multilib)
fi
if [ ${#need[@]} -gt 0 ]; then
  echo "install-deps: installing ${need[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

if ! "$PYTHON" -c 'import gdbfault, pygdbmi, psutil, tabulate, qemu.qmp, elftools, tqdm, pytest, matplotlib, wheel' 2>/dev/null \
   || ! command -v gdbfault >/dev/null; then
  echo "install-deps: pip install -e .[test]"
  "$PYTHON" -m pip install -q --disable-pip-version-check -e ".[test]"
fi
