"""GDB at one fault of a kept recording: the fault card, `--ex` commands, or a prompt (`--gdb`).

GDB attaches to a replay started from the snapshot saved at the fault's
entry, with the kernel's names (its ELF, or an ELF made from its System.map:
kernels/symbols.map_to_elf), the workload's (`add-symbol-file`), the probe
engine (`faultprobe ...`) and gdbscripts/faultcard.py, and one breakpoint:
at the fault entry, so that `continue` and `reverse-continue` stop at the
next and the previous fault. The snapshot store holds a snapshot just before
the previous fault, so reverse execution there is cheap (a reverse step
loads the nearest snapshot before its target and replays forward).

Batch (the card and `--ex`): a plain `gdb -batch`, whose commands run one
after the other, stops and all; each `--ex` command's output is followed by
the guest instruction count (`monitor info replay`), split apart by markers.
Interactive (`--gdb`): the same GDB on the user's terminal; gdbfault ignores
Ctrl-C meanwhile (it is GDB's, to interrupt the guest) and tears the replay
down when GDB exits.

A user who writes guest memory or registers there makes the replay run other
code than the recording from then on (FACTS: debugger writes): what follows
is then not the recorded run.
"""
import json
import re
import signal
import subprocess
from pathlib import Path

from gdbfault.base.errors import GdbfaultError
from gdbfault.base.locations import GDBSCRIPTS
from gdbfault.base.tools import find_tool
from gdbfault.probing.gdb_session import GDB_ARCHITECTURES

__all__ = ["init_script", "run_batch", "run_interactive", "entry_convention"]

_MARK = "@@gdbfault"
_ICOUNT = re.compile(r"instruction count = (\d+)")
# Kernels whose fault entry takes (regs, error_code) on the stack (asmlinkage): the lab kernel, 2.0-2.4.
_STACK_ARGS = ("lab", "linux-2.0", "linux-2.2", "linux-2.4")


def entry_convention(emulator, profile):
    """Where the fault entry finds (regs, error_code): faultcard's `stack`, `regparm` or `sysv64`."""
    if emulator == "x86_64":
        return "sysv64"
    return "stack" if profile in _STACK_ARGS else "regparm"


def init_script(path, gdb_socket, emulator, kernel_symbols, workload, entry):
    """GDB's start-up commands (module docstring), written to `path`."""
    lines = ["set pagination off", "set confirm off", "set width 0", "set print pretty off",
             f"set architecture {GDB_ARCHITECTURES.get(emulator, 'auto')}",
             f"file {kernel_symbols}"]
    if workload is not None:
        lines.append(f"add-symbol-file {workload}")
    lines += [f"target remote {gdb_socket}",
              f"source {GDBSCRIPTS / 'faultprobe.py'}", f"source {GDBSCRIPTS / 'faultcard.py'}",
              f"break *{entry:#x}"]
    Path(path).write_text("\n".join(lines) + "\n")
    return path


def _gdb(script):
    return [find_tool("gdb"), "-nx", "-q", "-x", str(script)]


def run_batch(script, card_args, card_file, commands, timeout):
    """The card (to `card_file`, read back as a dict) and each command's output with the guest
    instruction count after it: (card, [{command, output, icount}])."""
    argv = _gdb(script) + ["-batch", "-ex", f"faultcard {card_args} {card_file}"]
    for i, command in enumerate(commands):
        argv += ["-ex", f"echo \\n{_MARK} ex {i}\\n", "-ex", command,
                 "-ex", f"echo \\n{_MARK} icount\\n", "-ex", "monitor info replay"]
    try:
        # (one stream: GDB writes a monitor command's output to stderr, the rest to stdout)
        done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise GdbfaultError(f"GDB did not finish the fault's commands within {timeout:.0f} s") from None
    try:
        card = json.loads(Path(card_file).read_text())
    except (OSError, ValueError):
        tail = done.stdout.strip().splitlines()[-1:] or ["no message"]
        raise GdbfaultError(f"GDB could not read the fault card: {tail[0]}") from None
    return card, _split(done.stdout, commands)


def _split(text, commands):
    """Each command's output and the instruction count after it, from the marked transcript."""
    out = [{"command": c, "output": "", "icount": None} for c in commands]
    current, counting = None, False
    for line in text.splitlines():
        if line.startswith(f"{_MARK} ex "):
            current, counting = int(line.split()[-1]), False
            continue
        if line.startswith(f"{_MARK} icount"):
            counting = True
            continue
        if current is None:
            continue
        m = _ICOUNT.search(line) if counting else None
        if m:
            out[current]["icount"] = int(m.group(1))
        elif not counting:
            out[current]["output"] += line + "\n"
    for item in out:
        item["output"] = item["output"].strip("\n")
    return out


def run_interactive(script, card_args):
    """GDB on the user's terminal at the fault; returns when the user quits it."""
    argv = _gdb(script) + ["-ex", "echo \\n(gdbfault: at the fault's entry; `continue`/`reverse-continue` go to "
                                  "the next/previous fault, `faultcard " + card_args + "` prints the card)\\n"]
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)     # Ctrl-C is GDB's now
    try:
        return subprocess.run(argv).returncode
    finally:
        signal.signal(signal.SIGINT, previous)
