"""The zero-stop backend: the TCG plugin counts, the guest never stops.

The probes are the same ones the GDB backend arms (resolved from the same
profile and symbols, backends/plan.py); the plugin counts each probe
address, opens a path at the fault entry, appends the other probes as
events and closes the path at the instruction after the call into the fault
entry. What it counted goes through the same builder as the GDB backend's
(probing/measure.fill_result), so reports, compare and check work unchanged.
A feature that writes guest memory (RunHooks.writes_guest) gets a GDB on the
same QEMU, started halted so that its breakpoints go in before the guest runs.
"""
import time

from gdbfault.base.errors import GdbfaultError, GuestError
from gdbfault.base.lifecycle import shielded
from gdbfault.backends.recording import timed_out
from gdbfault.machine.config import plugin_config
from gdbfault.machine.gdbmi import Debugger
from gdbfault.machine.plugins import plugin_args, plugin_library
from gdbfault.machine.qemu import EXIT_CLEAN, Machine, describe_exit, private_dir
from gdbfault.model.paths import cost_stats
from gdbfault.model.result import CostStats, Trace
from gdbfault.probing.gdb_session import connect, load_probe_engine, prepare_debugger, read_counts
from gdbfault.probing.measure import Measured, ProbeCount, end_label, fill_result, open_path_label
from gdbfault.probing.plugin_probes import needs_learned_returns, plugin_probe_list, read_plugin_result, \
    write_probe_file

__all__ = ["run_with_plugin", "probe_roles"]


def run_with_plugin(plan, hooks):
    """Boot with the plugin loaded, wait for the guest to end, fill the plan's RunResult.

    Stopped early (a signal, --timeout, an error), QEMU is asked to quit in
    order (SIGTERM): the plugin writes its counts at exit and they are kept.
    """
    spec, result = plan.spec, plan.result
    library = plugin_library("faultcount")     # PluginUnavailable names what is missing
    plist = plugin_probe_list(plan.code_file, plan.symbols, plan.probes, plan.arm) + hooks.plugin_probes()
    # No return site read from the kernel's code (a bzImage booted as it is): the plugin learns it
    learn = needs_learned_returns(plist)
    run_dir = private_dir()
    probe_file, out_file = run_dir / "probes.txt", run_dir / "plugin-result.json"
    options = dict(probes=probe_file, out=out_file, **({"autoret": "on"} if learn else {}))
    config = plugin_config(plan.config, plugin_args(library, **options),
                           halted=hooks.writes_guest)      # its breakpoints go in before the guest runs
    machine = Machine(config, run_dir=run_dir, own_dir=True)
    dbg = None
    t0 = time.monotonic()
    try:
        write_probe_file(probe_file, plist)
        result.mode.backend = "plugin"
        result.mode.trace = learn or any(kind == "ret" for _, kind, _ in plist)
        result.mode.replay = False
        counts = None
        try:
            machine.start(timeout=plan.left(at_most=20.0))
            if hooks.writes_guest:
                dbg = _attach_debugger(plan, hooks, machine)
            status = machine.wait_until(plan.deadline)
            if status is None:
                raise timed_out(spec, machine)
            if dbg is not None and dbg.alive:
                counts = read_counts(dbg, machine.run_dir)
        except (GdbfaultError, KeyboardInterrupt) as exc:
            with shielded():
                _salvage(result, machine, out_file, plist, plan.probes, t0, end_label(exc))
            raise
        wall = time.monotonic() - t0
        result.run.exit_status = status
        result.run.exit = describe_exit(status)
        if status != EXIT_CLEAN and not out_file.is_file():
            try:                          # a killed QEMU writes no result: say what happened (exit 3)
                machine.check_exit(status)
            except GuestError as exc:
                raise GuestError(f"{exc}; the plugin writes its counts when QEMU exits, "
                                 "so this run has none") from None
        data = read_plugin_result(out_file)
        if learn and not data.get("learned_returns"):
            result.mode.trace = False     # (no direct call into the fault entry: i386 6.1's is indirect)
        fill_result(result, _measured(data, plist, plan.probes, result.mode.trace, machine.serial_output(), wall),
                    open_path_label(status))
        hooks.finish(result, counts, _with_roles(data, plist, plan.probes))
        machine.check_exit(status)
        if result.guest is None and not result.workload.own:
            raise GuestError("the workload printed no GDBFAULT-RESULT line")
        result.run.complete = True
        return result
    finally:
        with shielded():
            if dbg is not None:
                dbg.close()
            machine.close(keep_dir=spec.keep_run_dir)


def _attach_debugger(plan, hooks, machine):
    """A GDB on the plugin's QEMU (halted), for a feature that writes guest memory; the guest then runs."""
    dbg = Debugger(plan.spec.gdb)
    prepare_debugger(dbg, plan.kernel, plan.arch)
    connect(dbg, str(machine.gdb_socket))
    load_probe_engine(dbg, [], None, arch=plan.arch)
    hooks.on_debugger(dbg, machine, recording=False)
    dbg.mi("-exec-continue")
    return dbg


def _salvage(result, machine, out_file, plist, probes, t0, why):
    """Stop QEMU in order so the plugin writes what it counted, and keep it."""
    running = machine.proc is not None and machine.poll() is None
    status = machine.stop()
    result.run.exit_status = status
    result.run.exit = f"stopped by gdbfault ({why})" if running else describe_exit(status)
    if out_file.is_file():
        try:
            fill_result(result, _measured(read_plugin_result(out_file), plist, probes, result.mode.trace,
                                          machine.serial_output(), time.monotonic() - t0),
                        "cut off by the stop" if running else None)
        except GdbfaultError:
            pass


def _probe_addresses(plist):
    """The plugin reports each probe under the name it was given (plugin_probe_list): name -> address."""
    return {name: addr for addr, kind, name in plist if kind in ("entry", "event")}


def probe_roles(plist, probes):
    """name -> role of each probe in the plugin's list (probes: the resolved ones)."""
    role_at = {p.address: p.role for p in probes}
    return {name: role_at[addr] for name, addr in _probe_addresses(plist).items() if addr in role_at}


def _with_roles(data, plist, probes):
    """The plugin's result with `roles` (its probe names -> roles) added, for a feature's finish()."""
    return dict(data, roles=probe_roles(plist, probes))


def _measured(data, plist, probes, traced, serial, wall):
    """The plugin's result file as a backend-neutral Measured (counts matched to probes by address)."""
    address_of = _probe_addresses(plist)
    counts = {addr: ProbeCount(0, 0) for addr in address_of.values()}
    for name, h in data["hits"].items():
        if name in address_of:
            counts[address_of[name]] = ProbeCount(h["boot"], h["workload"])
    roles = probe_roles(plist, probes)
    paths = trace = None
    if traced:
        paths = {"paths": [{"phase": p["phase"], "events": [roles.get(e, e) for e in p["events"]],
                            "cost_hist": p["cost_hist"]} for p in data["paths"]], "open": []}
        learned = [int(a, 16) for a in data.get("learned_returns", [])]
        trace = Trace(entries=None, lost=data["unmatched_ret"], sample=1, costed=True,
                      return_sites=sorted(addr for addr, kind, _ in plist if kind == "ret") + learned,
                      open_at_exit=data["open_paths_at_exit"],
                      # paths whose window held a block left early (a fault nested in the
                      # handler): their costs are too high; none on the lab workloads
                      inexact_paths=data.get("inexact_paths", 0),
                      iteration=CostStats.from_dict(cost_stats([])))
    return Measured(counts=counts, paths=paths, trace=trace, serial=serial, wall_s=wall,
                    insns_total=data["insns_total"])
