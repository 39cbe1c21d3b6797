#!/usr/bin/env python3
"""Cross-check one path cost of the faultcount plugin independently.

Boots a kernel under `-icount shift=0` (gdbfault's own Machine: gdbstub and
QMP on unix sockets in a private run directory), and runs `gdb -batch -nx`
with two breakpoints: the path entry and the return site. At the Nth hit of
the entry it reads QEMU's instruction counter (QMP `query-replay`, through
the qemu.qmp package, as the probe engine's path tracer does), then continues
to the next hit of the return site and reads it again; it also counts
`stepi`s over the same stretch in a second pass. Both stops are before their
instruction executes, so the differences are the instructions from the entry
(inclusive) to the return site (exclusive): the plugin's path cost.

Usage:
  scripts/path_cost_crosscheck.py --kernel K.elf [--initrd W.elf] [--append ARGS]
                --entry 0xADDR --ret 0xADDR [--nth 5] [--stepi]
Prints one JSON object: {"icount_cost": n, "stepi_cost": m}.
"""
import argparse
import json
import subprocess
from pathlib import Path

import qemu.qmp

from gdbfault.machine.qemu import Machine, MachineConfig

GDB_PY = r'''
import gdb, json, sys
sys.path.append(QMP_SITE)              # GDB's Python borrows our qemu.qmp
from qemu.qmp.legacy import QEMUMonitorProtocol
qmp = QEMUMonitorProtocol(QMPSOCK)
qmp.connect()
def icount():
    return qmp.cmd("query-replay")["icount"]
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
    i0 = icount()
    b1.enabled = False
    b2 = gdb.Breakpoint("*%d" % RET, internal=True)
    gdb.execute("continue")
    result["icount_cost"] = icount() - i0
qmp.close()
print("CROSSCHECK " + json.dumps(result))
gdb.execute("kill")
'''


def one(args, stepi):
    config = MachineConfig(kernel=Path(args.kernel), initrd=[args.initrd] if args.initrd else [],
                           append=args.append or "")
    with Machine(config) as machine:
        machine.start()
        site = Path(qemu.qmp.__file__).resolve().parents[2]
        script = machine.run_dir / "crosscheck-gdb.py"
        script.write_text(f"GDBSOCK={str(machine.gdb_socket)!r}\n"
                          f"QMPSOCK={str(machine.probe_qmp_socket)!r}\n"
                          f"QMP_SITE={str(site)!r}\nENTRY={args.entry}\nRET={args.ret}\n"
                          f"NTH={args.nth}\nSTEPI={stepi}\n" + GDB_PY)
        proc = subprocess.run(["gdb", "-nx", "-batch", "-x", str(script)],
                              capture_output=True, text=True, timeout=600)
    for line in proc.stdout.splitlines():
        if line.startswith("CROSSCHECK "):
            return json.loads(line[len("CROSSCHECK "):])
    raise SystemExit(f"gdb failed: {proc.stdout[-800:]} {proc.stderr[-800:]}")


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
