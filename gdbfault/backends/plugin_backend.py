"""A run on the zero-stop backend: the TCG plugin counts, GDB is not attached.

The probes are the same ones the GDB backend arms (resolved from the same
profile and symbols); the plugin counts each probe address, opens a path at
the fault entry, appends the other probes as events and closes the path at
the instruction after the call into the fault entry. What it counted goes
through the same builder as the GDB backend's (measure.fill_result), so
reports, compare and check work unchanged.
"""
import dataclasses
import time

from gdbfault.base.errors import GdbfaultError, GuestError, TimedOut
from gdbfault.base.lifecycle import shielded
from gdbfault.probing.measure import Measured, ProbeCount, end_label, fill_result, open_path_label
from gdbfault.model.paths import cost_stats
from gdbfault.probing.plugin_probes import (fault_return_sites, plugin_library, qemu_plugin_args,
                                     read_plugin_result, write_probe_file)
from gdbfault.kernels.profiles import load_profile, pick_profile, resolve_probes
from gdbfault.model.roles import ENTRY
from gdbfault.machine.qemu import EXIT_CLEAN, Machine, describe_exit
from gdbfault.model.result import CostStats, CrossCheck, Trace, as_result
from gdbfault.kernels.symbols import is_elf, load_symbols

__all__ = ["run_with_plugin", "plugin_probe_list", "kernel_probe_list", "cross_check"]


def plugin_probe_list(kernel, probes, arm, arm_name="workload_start"):
    """[(address, kind, name)] for the plugin; names are the probe symbols."""
    entry = next((p for p in probes if p.role == ENTRY), None)
    out = []
    for p in probes:
        out.append((p.address, "entry" if p is entry else "event", p.symbol))
    if entry is not None and is_elf(kernel):
        # The return site: the instruction after the fault entry's call (objdump).
        try:
            sites = fault_return_sites(kernel, callee=entry.symbol)
        except GdbfaultError:
            sites = []
        out += [(addr, "ret", f"return_{i}") for i, addr in enumerate(sites)]
    if arm is not None:
        out.append((arm, "arm", arm_name))
    return out


def kernel_probe_list(kernel, system_map=None, profile=None, extra_probes=(), arm_symbol=None):
    """The plugin's probe list for a kernel, outside a run (the plugin's own
    tools and tests): the probes `gdbfault attach` would arm, from the same
    symbols and profile, plus an arm probe on `arm_symbol` if given."""
    symbols = load_symbols(kernel, system_map)
    chosen = load_profile(profile) if profile else pick_profile(symbols)
    probes = resolve_probes(chosen, symbols, list(extra_probes))
    arm = symbols.require(arm_symbol) if arm_symbol else None
    return plugin_probe_list(kernel, probes, arm, arm_name=arm_symbol)


def run_with_plugin(spec, result, config, probes, arm, deadline=None, live=None):
    """Boot with the plugin loaded, wait for the guest to end, fill `result` (a RunResult).

    Stopped early (a signal, --timeout, an error), QEMU is asked to quit in
    order (SIGTERM): the plugin writes its counts at exit and they are kept.
    live: (LivePatch, iteration) for --live-patch: GDB then connects only to
    apply it (livepatch_run.PluginPatcher).
    """
    library = plugin_library()            # PluginUnavailable names what is missing
    if deadline is None:
        deadline = time.monotonic() + spec.timeout_s
    patcher = None
    if live is not None:
        from gdbfault.livepatch.hooks import PluginPatcher
        patcher = PluginPatcher(spec, live, config.initrd[0])
    machine = Machine(config)
    machine.prepare()
    probe_file = machine.run_dir / "probes.txt"
    out_file = machine.run_dir / "plugin-result.json"
    plist = plugin_probe_list(config.kernel, probes, arm)
    if patcher is not None:
        plist += patcher.plugin_probes()
    t0 = time.monotonic()
    try:
        write_probe_file(probe_file, plist)
        # (halted: the patch breakpoint goes in before the guest runs)
        machine.config = dataclasses.replace(
            config, extra_args=config.extra_args + qemu_plugin_args(library, probe_file, out_file),
            halted=patcher is not None)
        result.mode.backend = "plugin"
        result.mode.trace = any(kind == "ret" for _, kind, _ in plist)
        result.mode.replay = False
        snap = None
        try:
            machine.start(timeout=min(20.0, max(1.0, deadline - t0)))
            if patcher is not None:
                patcher.attach(machine, config.kernel)
            status = machine.wait_until(deadline)
            if status is None:
                raise TimedOut(f"the guest did not finish within --timeout {spec.timeout_s:g} s (hung?)")
            snap = patcher.finish() if patcher is not None else None
        except (GdbfaultError, KeyboardInterrupt) as exc:
            with shielded():
                _salvage_plugin(result, machine, out_file, plist, probes, t0, end_label(exc))
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
        fill_result(result, _measured(data, plist, probes, result.mode.trace, machine.serial_output(), wall),
                    open_path_label(status))
        if patcher is not None:
            patcher.fill(result, data, snap, _roles(plist, probes))
        machine.check_exit(status)
        if result.guest is None and not result.workload.own:
            raise GuestError("the workload printed no GDBFAULT-RESULT line")
        result.run.complete = True
        return result
    finally:
        if patcher is not None:
            patcher.close()
        machine.close(keep_dir=spec.keep_run_dir)


def _salvage_plugin(result, machine, out_file, plist, probes, t0, why):
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


def _roles(plist, probes):
    """name -> role of each probe in the plugin's list (probes: the resolved ones)."""
    role_at = {p.address: p.role for p in probes}
    return {name: role_at[addr] for name, addr in _probe_addresses(plist).items() if addr in role_at}


def _measured(data, plist, probes, traced, serial, wall):
    """The plugin's result file as a backend-neutral Measured (counts matched to probes by address)."""
    address_of = _probe_addresses(plist)
    counts = {addr: ProbeCount(0, 0) for addr in address_of.values()}
    for name, h in data["hits"].items():
        if name in address_of:
            counts[address_of[name]] = ProbeCount(h["boot"], h["workload"])
    roles = _roles(plist, probes)
    paths = trace = None
    if traced:
        paths = {"paths": [{"phase": p["phase"], "events": [roles.get(e, e) for e in p["events"]],
                            "cost_hist": p["cost_hist"]} for p in data["paths"]], "open": []}
        trace = Trace(entries=None, lost=data["unmatched_ret"], sample=1, costed=True,
                      open_at_exit=data["open_paths_at_exit"],
                      # paths whose window held a block left early (a fault nested in the
                      # handler): their costs are too high; none on the lab workloads
                      inexact_paths=data.get("inexact_paths", 0),
                      iteration=CostStats.from_dict(cost_stats([])))
    return Measured(counts=counts, paths=paths, trace=trace, serial=serial, wall_s=wall,
                    insns_total=data["insns_total"])


def cross_check(plugin_result, gdb_result):
    """Do two backends agree? Per-role workload hits, path shapes and their costs (a CrossCheck)."""
    plugin_result, gdb_result = as_result(plugin_result), as_result(gdb_result)
    diffs = []
    for p in plugin_result.probes:
        other = gdb_result.probe(p.role)
        other_hits = other.hits.workload if other is not None else None
        if other_hits != p.hits.workload:
            diffs.append(f"{p.role} ({p.symbol}): plugin {p.hits.workload}, gdb {other_hits}")
    plugin_paths = {r.shape: r for r in plugin_result.paths or []}
    gdb_paths = {r.shape: r for r in gdb_result.paths or []}
    for shape in sorted(set(plugin_paths) | set(gdb_paths)):
        a, b = plugin_paths.get(shape), gdb_paths.get(shape)
        if a is None or b is None or a.count != b.count:
            diffs.append(f"path '{shape}': plugin {a and a.count}, gdb {b and b.count}")
        elif a.cost_hist and b.cost_hist and a.cost_hist != b.cost_hist:
            diffs.append(f"path '{shape}': costs differ (median plugin {a.median}, gdb {b.median})")
    return CrossCheck(backend="gdb", agree=not diffs, differences=diffs,
                      gdb_duplicates_filtered=gdb_result.run.duplicates or 0,
                      gdb_wall_s=gdb_result.run.wall_s)
