"""Unit tests: parsers, profiles, ground truth, reports, the MI layer.

No kernel is booted here; the MI tests talk to a real GDB with no target.
"""
import csv
import io
import json

import pytest

from gdbfault.base.errors import GdbfaultError
from gdbfault.machine.gdbmi import Debugger, GdbCommandError, mi_quote
from gdbfault.kernels.profiles import builtin_profiles, load_profile, pick_profile, resolve_probes
from gdbfault.model.roles import parse_probe_option
from gdbfault.machine.qemu import Machine, MachineConfig, describe_exit
from gdbfault.views.report import CSV_FIELDS, load_run, render, save_run
from gdbfault.model.result import Hits, Probe
from gdbfault.kernels.symbols import SymbolTable, parse_system_map
from gdbfault.model.truth import compare_with_guest, expected_hits, parse_guest_output

MAP_22 = """\
c0100000 T _stext
c010de04 T do_page_fault
c0110a20 T search_exception_table
c0112f30 T force_sig
c0120000 T handle_mm_fault
c0200000 A _end
"""


def table(text, kind="System.map"):
    return SymbolTable("System.map", kind, parse_system_map(text))


def test_system_map_parsing_skips_absolute_symbols():
    syms = parse_system_map(MAP_22)
    assert syms["do_page_fault"] == 0xC010DE04
    assert "_end" not in syms


def test_one_symbol_reader_gives_the_same_code_symbols_from_elf_and_system_map():
    """The lab kernel's ELF .symtab and its System.map (nm -n of that ELF) agree."""
    from gdbfault.base.locations import lab_kernel
    from gdbfault.kernels.symbols import symbol_rows
    try:
        kernel, system_map = lab_kernel("vanilla")
    except GdbfaultError:
        pytest.skip("lab kernel not built")
    from_map = {r[:3] for r in symbol_rows(kernel, system_map)[0] if r.letter in "tT"}
    from_elf = {r[:3] for r in symbol_rows(kernel)[0] if r.letter in "tT"}
    assert len(from_map) > 100 and from_map == from_elf


def test_system_map_garbage_is_an_error():
    with pytest.raises(GdbfaultError, match="no symbols"):
        parse_system_map("this is not a map\n")


def test_profile_picked_from_symbols_and_resolved():
    syms = table(MAP_22)
    prof = pick_profile(syms)
    assert prof.name == "linux-2.2"
    probes = resolve_probes(prof, syms)
    assert [(p.role, p.address) for p in probes][:3] == [
        ("fault entry", 0xC010DE04), ("exception search", 0xC0110A20), ("signal forced", 0xC0112F30)]


def test_modern_kernel_names_are_suggested_for_a_missing_symbol():
    modern = table("c1000000 T exc_page_fault\nc1000100 T do_user_addr_fault\n"
                   "c1000200 T search_exception_tables\nc1000300 T force_sig_fault\n")
    with pytest.raises(GdbfaultError) as err:
        resolve_probes(load_profile("linux-2.x"), modern)
    msg = str(err.value)
    assert "do_page_fault" in msg and "exc_page_fault" in msg
    assert pick_profile(modern).name == "linux-modern"


def test_extra_probe_option_and_unknown_symbol():
    syms = table(MAP_22)
    assert parse_probe_option("resolved=handle_mm_fault") == ("resolved", "handle_mm_fault")
    assert parse_probe_option("force_sig") == ("force_sig", "force_sig")
    with pytest.raises(GdbfaultError, match="ROLE=SYMBOL"):
        parse_probe_option("=x")
    with pytest.raises(GdbfaultError, match="'nope' not found in System.map"):
        resolve_probes(load_profile("linux-2.x"), syms, [("x", "nope")])


def test_user_profile_file_is_data(tmp_path):
    f = tmp_path / "mine.toml"
    f.write_text('name = "mine"\n[[probes]]\nrole = "entry"\nsymbols = "do_page_fault"\n')
    prof = load_profile(str(f))
    assert prof.roles == [("entry", ["do_page_fault"], False)]
    bad = tmp_path / "bad.toml"
    bad.write_text("[[probes]]\nrole = 1\n")
    with pytest.raises(GdbfaultError, match="needs 'role' and 'symbols'"):
        load_profile(str(bad))
    with pytest.raises(GdbfaultError, match="unknown profile"):
        load_profile("no-such-profile")
    assert {"lab", "linux-2.0", "linux-2.2", "linux-modern"} <= set(builtin_profiles())


SERIAL = """gdbfault lab kernel
GDBFAULT-START {"workload":"mprotect","iterations":10}
GDBFAULT-PROGRESS 5/10
GDBFAULT-PROGRESS 10/10
GDBFAULT-RESULT {"workload":"mprotect","iterations":10,"sigsegv":10,"efault":2,"demand_pages":3}
"""


def test_guest_output_parsing():
    g = parse_guest_output(SERIAL)
    assert g["started"] and g["progress"] == (10, 10)
    assert g["result"]["sigsegv"] == 10
    assert parse_guest_output("GDBFAULT-RESULT {broken")["result"] is None


def test_ground_truth_rules():
    guest = {"sigsegv": 10, "efault": 2, "demand_pages": 3}
    van = expected_hits(guest, "lab-vanilla")
    pat = expected_hits(guest, "lab-patched")
    assert van["exception search"] == 12 and pat["exception search"] == 2
    assert van["fault resolved"] == 13 and van["fault entry"] == 25
    assert expected_hits(guest, "generic") == {"signal forced": 10}
    assert expected_hits(guest, "linux-modern") == {"signal forced": 10}
    probes = [Probe("signal forced", "force_sig", 0xC0102000, hits=Hits(0, 9))]
    [row] = compare_with_guest(probes, guest, "generic")
    assert row.ok is False and row.expected == 10 and row.counted == 9


def sample_run():
    return {
        "schema": "gdbfault.run/1",
        "tool": {"gdbfault": "0.1.0", "qemu": "7.2.22", "gdb": "13.1"},
        "kernel": {"path": "/k/kernel.elf", "lab": True, "variant": "vanilla",
                   "symbols": "ELF", "profile": "lab", "model": "lab-vanilla"},
        "workload": {"name": "mprotect", "iterations": 10, "command_line": "iterations=10"},
        "mode": {"backend": "gdb", "accel": "tcg", "icount": True},
        "probes": [{"role": "fault entry", "symbol": "do_page_fault", "address": 0xC0101000,
                    "hits": {"boot": 0, "workload": 20}, "total": 20, "duplicates": 1, "per_iteration": 2.0},
                   {"role": "signal forced", "symbol": "force_sig", "address": 0xC0102000,
                    "hits": {"boot": 0, "workload": 10}, "total": 10, "duplicates": 0, "per_iteration": 1.0}],
        "guest": {"iterations": 10, "sigsegv": 10, "cycles_per_iteration": 3000, "ticks_per_s": 100,
                  "real_ticks": 5, "user_ticks": 1, "sys_ticks": 4},
        "checks": [{"role": "signal forced", "symbol": "force_sig", "expected": 10, "counted": 10, "ok": True}],
        "run": {"complete": True, "error": None, "exit_status": 0, "exit": "guest powered off cleanly",
                "wall_s": 2.5, "hits": 30, "duplicates": 1, "hits_per_s": 12.0},
    }


def test_table_report_shows_counts_guest_and_check():
    text = render(sample_run(), "table")
    assert "do_page_fault" in text and "0xc0101000" in text
    assert "SIGSEGV 10" in text and "sys 0.04 s" in text
    assert "match the guest's own summary ✓" in text and "filtered: 1" in text


def test_csv_and_json_have_stable_keys(tmp_path):
    rows = list(csv.DictReader(io.StringIO(render(sample_run(), "csv"))))
    assert tuple(rows[0].keys()) == CSV_FIELDS
    assert rows[1]["symbol"] == "force_sig" and rows[1]["match"] == "yes"
    assert json.loads(render(sample_run(), "json"))["probes"][0]["hits"]["workload"] == 20
    assert "| role" in render(sample_run(), "markdown")
    path = tmp_path / "run.json"
    save_run(sample_run(), path)
    assert load_run(path) == sample_run()
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(GdbfaultError, match="not a gdbfault run"):
        load_run(tmp_path / "x.json")


def test_mi_commands_are_matched_by_token():
    with Debugger() as dbg:
        rec, _ = dbg.mi("-gdb-version")
        assert rec["message"] == "done"
        outs = [dbg.console(f"echo line{i}\\n") for i in range(5)]
        assert outs == [f"line{i}\n" for i in range(5)]
        with pytest.raises(GdbCommandError, match="Undefined command"):
            dbg.console("no-such-command")
        assert dbg.console("echo still alive\\n") == "still alive\n"
        pid = dbg.pid
    import psutil
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_mi_quote():
    assert mi_quote('a "b" \\c') == '"a \\"b\\" \\\\c"'


def test_qemu_listens_only_on_unix_sockets(tmp_path):
    k = tmp_path / "k.elf"
    k.write_bytes(b"\x7fELF")
    m = Machine(MachineConfig(kernel=k))
    assert not m.run_dir.exists()          # nothing made until the machine is prepared or started
    argv = m.command()
    m.prepare()
    assert "-s" not in argv
    gdb_arg = argv[argv.index("-gdb") + 1]
    assert gdb_arg.startswith("unix:") and str(m.run_dir) in gdb_arg
    assert argv[argv.index("-qmp") + 1].startswith("unix:")
    assert oct(m.run_dir.stat().st_mode & 0o777) == "0o700"
    m.close()
    assert not m.run_dir.exists()


def test_qemu_dying_at_launch_says_why(tmp_path, no_leaks):
    k = tmp_path / "k.elf"
    k.write_bytes(b"not a kernel")
    m = Machine(MachineConfig(kernel=k, extra_args=["-no-such-option"]))
    with pytest.raises(GdbfaultError, match="QEMU died at launch.*no-such-option"):
        m.start()
    m.close()


def test_qemu_has_one_qmp_socket_the_tracers(tmp_path):
    k = tmp_path / "k.elf"
    k.write_bytes(b"\x7fELF")
    m = Machine(MachineConfig(kernel=k))
    argv = m.command()
    assert argv.count("-qmp") == 1
    assert argv[argv.index("-qmp") + 1] == f"unix:{m.probe_qmp_socket},server=on,wait=off"
    m.close()


def test_machine_config_is_one_pure_function_of_spec_boot_and_backend(tmp_path):
    import dataclasses
    from gdbfault.machine.config import machine_config, record_config, replay_config
    from gdbfault.kernels.boot import BootSetup
    from gdbfault.model.spec import RunSpec
    spec = RunSpec(kernel=str(tmp_path / "bz"), iterations=7, memory_mb=64)
    boot = BootSetup(kernel=tmp_path / "grub.bin", initrd=[], append="console=ttyS0 iterations=7",
                     memory_mb=256, extra_args=["-drive", "x"], rr_icount="shift=5")
    before = dataclasses.asdict(boot)
    config = machine_config(spec, tmp_path / "bz", [tmp_path / "init"], boot, "gdb")
    assert dataclasses.asdict(boot) == before                   # nothing it is given is changed
    assert (config.kernel, config.initrd, config.memory_mb) == (tmp_path / "grub.bin", [], 256)
    assert config.halted and config.icount and config.rr_icount == "shift=5"
    assert config == machine_config(spec, tmp_path / "bz", [tmp_path / "init"], boot, "gdb")
    rec = record_config(config)
    # in the guest folder: the log, and a snapshot store with the first instruction's snapshot
    assert rec.icount_options == "shift=5,rr=record,rrfile=guest.rr,rrsnapshot=gdbfault-start" and not rec.halted
    assert rec.extra_args == ["-drive", "x", "-net", "none", "-global", "apic.vapic=off",
                              "-drive", "file=state.qcow2,format=qcow2,if=none,id=gdbfault-state"]
    assert config.extra_args == ["-drive", "x"] and rec.store == "state.qcow2"
    assert record_config(config, store=False).icount_options == "shift=5,rr=record,rrfile=guest.rr"
    rep = replay_config(config, snapshot="s1")
    assert rep.icount_options.endswith(",rr=replay,rrfile=guest.rr,rrsnapshot=s1")
    assert rep.extra_args == rec.extra_args and rep.halted and not rep.watch_qmp
    # the lab kernel: the spec's own files and command line; backends differ in halting
    lab = RunSpec(iterations=3)
    plain = machine_config(lab, tmp_path / "k.elf", [tmp_path / "init"], None, "plain")
    assert plain.append == "iterations=3" and plain.initrd == [tmp_path / "init"] and not plain.halted
    assert plain.icount_options == plain.rr_icount == "shift=0"
    with pytest.raises(ValueError):
        machine_config(lab, tmp_path / "k.elf", [], None, "kvm")


def test_missing_kernel_is_a_clear_error(tmp_path):
    with pytest.raises(GdbfaultError, match="kernel file not found"):
        Machine(MachineConfig(kernel=tmp_path / "nope")).command()


def test_exit_statuses_are_named():
    assert describe_exit(0) == "guest powered off cleanly"
    assert describe_exit(29) == "guest kernel oopsed"
    assert "SIGKILL" in describe_exit(-9)
