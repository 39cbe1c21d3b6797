#!/usr/bin/env python3
"""Cross-check one path cost of the faultcount plugin independently.

Boots a kernel under `-icount shift=0` with QEMU's gdbstub and QMP on unix
sockets, and runs `gdb -batch -nx` with two breakpoints: the path entry and
the return site. At the Nth hit of the entry it reads QEMU's instruction
counter (QMP `query-replay`), then continues to the next hit of the return
site and reads it again; it also counts `stepi`s over the same stretch in a
second pass. Both stops are before their instruction executes, so the
differences are the instructions from the entry (inclusive) to the return
site (exclusive): the plugin's path cost.

Usage:
  crosscheck.py --kernel K.elf [--initrd W.elf] [--append ARGS]
                --entry 0xADDR --ret 0xADDR [--nth 5] [--stepi]
Prints one JSON object: {"icount_cost": n, "stepi_cost": m}.
"""
import argparse
import json
import os
import subprocess
import tempfile
import time

GDB_PY = r'''
import gdb, json, socket
def qmp_icount(path):
    s = socket.socket(socket.AF_UNIX); s.connect(path); f = s.makefile("rw")
    f.readline()
    for cmd in ("qmp_capabilities", "query-replay"):
        f.write(json.dumps({"execute": cmd}) + "\n"); f.flush()
        while True:
            msg = json.loads(f.readline())
            if "return" in msg or "error" in msg:
                break
    s.close()
    return msg["return"]["icount"]
gdb.execute("set architecture i386")
gdb.execute("set pagination off")
gdb.execute("target remote " + GDBSOCK)
b1 = gdb.Breakpoint("*%d" % ENTRY, internal=True)
b1.ignore_count = NTH - 1
gdb.execute("continue")
pc = int(gdb.parse_and_eval("$pc")) & 0xffffffff
assert pc == ENTRY, hex(pc)
result = {}
if STEPI:
    n = 0
    b1.enabled = False
    while (int(gdb.parse_and_eval("$pc")) & 0xffffffff) != RET:
        gdb.execute("stepi", to_string=True)
        n += 1
        if n > 10000000:
            break
    result["stepi_cost"] = n
else:
    i0 = qmp_icount(QMPSOCK)
    b1.enabled = False
    b2 = gdb.Breakpoint("*%d" % RET, internal=True)
    gdb.execute("continue")
    i1 = qmp_icount(QMPSOCK)
    result["icount_cost"] = i1 - i0
print("CROSSCHECK " + json.dumps(result))
gdb.execute("kill")
'''


def one(args, stepi):
    with tempfile.TemporaryDirectory(prefix="fcx.") as tmp:
        gsock, qsock = os.path.join(tmp, "gdb"), os.path.join(tmp, "qmp")
        cmd = ["qemu-system-i386", "-m", "64", "-nodefaults", "-display", "none",
               "-no-reboot", "-S", "-icount", "shift=0", "-kernel", args.kernel,
               "-gdb", f"unix:{gsock},server=on,wait=off",
               "-qmp", f"unix:{qsock},server=on,wait=off",
               "-serial", f"file:{os.path.join(tmp, 'serial.log')}",
               "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"]
        if args.initrd:
            cmd += ["-initrd", args.initrd]
        if args.append:
            cmd += ["-append", args.append]
        qemu = subprocess.Popen(cmd, stdin=subprocess.DEVNULL)
        try:
            for _ in range(100):
                if os.path.exists(gsock) and os.path.exists(qsock):
                    break
                time.sleep(0.05)
            script = os.path.join(tmp, "x.py")
            with open(script, "w") as f:
                f.write(f"GDBSOCK={gsock!r}\nQMPSOCK={qsock!r}\nENTRY={args.entry}\n"
                        f"RET={args.ret}\nNTH={args.nth}\nSTEPI={stepi}\n" + GDB_PY)
            proc = subprocess.run(["gdb", "-nx", "-batch", "-x", script],
                                  capture_output=True, text=True, timeout=600)
            for line in proc.stdout.splitlines():
                if line.startswith("CROSSCHECK "):
                    return json.loads(line[len("CROSSCHECK "):])
            raise SystemExit(f"gdb failed: {proc.stdout[-800:]} {proc.stderr[-800:]}")
        finally:
            qemu.kill()
            qemu.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kernel", required=True)
    ap.add_argument("--initrd")
    ap.add_argument("--append")
    ap.add_argument("--entry", type=lambda s: int(s, 0), required=True)
    ap.add_argument("--ret", type=lambda s: int(s, 0), required=True)
    ap.add_argument("--nth", type=int, default=5)
    ap.add_argument("--stepi", action="store_true", help="also count stepi")
    args = ap.parse_args()
    result = one(args, False)
    if args.stepi:
        result.update(one(args, True))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
