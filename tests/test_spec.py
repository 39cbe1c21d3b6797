"""Unit tests for the run options (model/spec.py) as the command line and check specs see them."""
import dataclasses

import pytest

from gdbfault.analysis.check.spec import LineFinder, SpecError, parse_spec, run_specs
from gdbfault.cli import build_parser
from gdbfault.base.errors import GdbfaultError
from gdbfault.model.spec import RUN_OPTIONS, RunSpec

EXPECT = '\n[[expect]]\nname = "x"\nleft = "a.iterations"\nop = ">"\nright = 0\n'


def test_every_option_sets_a_real_field_and_has_a_flag():
    names = {f.name for f in dataclasses.fields(RunSpec)}
    for opt in RUN_OPTIONS:
        assert opt.field is None or opt.field in names, opt.key
        assert opt.flag and opt.flag.startswith("--"), opt.key


def test_command_line_defaults_are_the_run_spec_defaults():
    # One place for defaults: attach --qemu with no options is RunSpec() itself.
    from gdbfault.cli.options import spec_from_args as _spec_from_args
    args = build_parser().parse_args(["attach", "--qemu"])
    assert _spec_from_args(args) == RunSpec()
    args = build_parser().parse_args(["compare"])
    assert _spec_from_args(args) == RunSpec()


def test_command_line_options_reach_the_spec():
    from gdbfault.cli.options import spec_from_args as _spec_from_args
    args = build_parser().parse_args(["attach", "--qemu", "--iterations", "7", "--probe", "x=do_exit",
                                      "--no-icount", "--live", "--no-trace", "--timeout", "9",
                                      "--backend", "plugin", "--cost-sample", "3"])
    spec = _spec_from_args(args)
    assert (spec.iterations, spec.extra_probes, spec.icount, spec.replay, spec.trace, spec.timeout_s,
            spec.backend, spec.cost_sample) == (7, [("x", "do_exit")], False, False, False, 9.0, "plugin", 3)


def test_compare_offers_no_option_it_would_refuse():
    compare = build_parser()._subcommands["compare"]
    flags = {s for a in compare._actions for s in a.option_strings}
    assert not flags & {"--kernel", "--variant", "--system-map", "--verify-with", "--live-patch"}
    assert {"--before", "--after", "--iterations", "--backend", "--plot", "--profile"} <= flags


def test_a_problem_names_the_flag_on_the_command_line():
    with pytest.raises(GdbfaultError, match=r"^--cost-sample must be positive, not 0$"):
        RunSpec.from_mapping({"cost_sample": 0})
    with pytest.raises(GdbfaultError, match=r"^--patch-at goes with --live-patch$"):
        RunSpec.from_mapping({"patch_at": 3})
    with pytest.raises(GdbfaultError, match=r"^bad --probe 'x='"):
        RunSpec.from_mapping({"probes": ["x="]})


def test_every_run_option_is_a_check_spec_key():
    text = ('[runs.a]\nbackend = "plugin"\nicount = false\nreplay = false\ntrace = false\n'
            'timeout = 30\ncost_sample = 2\nprobes = [\n  "x=do_exit",\n]\nkeep_run_dir = true\n' + EXPECT)
    spec = run_specs(parse_spec(text, "s.toml"), ["a"])["a"]
    assert (spec.backend, spec.icount, spec.replay, spec.trace, spec.timeout_s, spec.cost_sample,
            spec.extra_probes, spec.keep_run_dir) == ("plugin", False, False, False, 30.0, 2, [("x", "do_exit")],
                                                      True)


@pytest.mark.parametrize("table, message", [
    ("iterations = 0", "s.toml:2: [runs.a] key 'iterations': must be between 1 and 4294967289"),
    ("patch_at = 3", "s.toml:2: [runs.a] key 'patch_at': goes with live_patch"),
    ('probes = ["="]', "s.toml:2: [runs.a] key 'probes': bad --probe '='"),
    ('system_map = "x.map"', "s.toml:2: [runs.a] key 'system_map': goes with a kernel you bring"),
])
def test_a_bad_value_in_a_check_spec_names_file_line_and_key(table, message):
    spec = parse_spec(f"[runs.a]\n{table}\n" + EXPECT, "s.toml")
    with pytest.raises(SpecError) as info:
        run_specs(spec, ["a"])
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_a_value_from_defaults_is_named_at_its_own_line():
    spec = parse_spec("[defaults]\ncost_sample = 0\n\n[runs.a]\nvariant = \"patched\"\n" + EXPECT, "s.toml")
    with pytest.raises(SpecError, match=r"^s\.toml:2: \[runs\.a\] key 'cost_sample': must be positive"):
        run_specs(spec, ["a"])


def test_unknown_key_and_wrong_type_are_refused_while_parsing():
    with pytest.raises(SpecError, match=r"^s\.toml:3: \[defaults\] key 'icont': unknown run setting"):
        parse_spec('title = "t"\n[defaults]\nicont = false\n[runs.a]\n' + EXPECT, "s.toml")
    with pytest.raises(SpecError, match=r"^s\.toml:2: \[runs\.a\] key 'icount': expected true or false"):
        parse_spec('[runs.a]\nicount = "no"\n' + EXPECT, "s.toml")


def test_line_finder_reads_positions_the_way_tomllib_reads_the_text():
    text = ('# a comment with [runs.a] in it\n[runs.a]\n"quoted" = 1\nlist = [\n  1,\n  2,\n]\n'
            '[[expect]]\nname = "one"\n[[expect]]\n\nname = "two"\n')
    lines = LineFinder(text)
    assert lines.line("runs", "a") == 2                  # not the comment
    assert lines.line("runs", "a", "quoted") == 3
    assert lines.line("runs", "a", "list") == 7          # a multi-line value is complete at its end
    assert lines.line("expect", 1) == 10 and lines.line("expect", 1, "name") == 12
    assert lines.line("nothing") is None


@pytest.mark.parametrize("argv, message", [
    (["--socket", "/nowhere", "--iterations", "5"], "--iterations goes with --qemu"),
    (["--socket", "/nowhere", "--backend", "plugin"], "--backend goes with --qemu"),
    (["--port", "1", "--no-trace"], "--no-trace goes with --qemu"),
    (["--pid", "1", "--cost-sample", "2"], "--cost-sample goes with --qemu"),
    (["--socket", "/nowhere", "--timeout", "5"], "--timeout goes with --qemu"),
    (["--socket", "/nowhere", "--workload", "demand"], "--workload goes with --qemu"),
    (["--socket", "/nowhere", "--patch-at", "3"], "--patch-at goes with --qemu"),
    (["--socket", "/nowhere", "--verify-with", "gdb"], "--verify-with goes with --qemu"),
    (["--qemu", "--duration", "3"], "--duration goes with --port/--socket/--pid"),
    (["--qemu", "--keep-patch"], "--keep-patch goes with --port/--socket/--pid"),
    (["--qemu", "--verify-with", "gdb"], "--verify-with gdb goes with --backend plugin"),
])
def test_attach_refuses_an_option_it_would_not_use_before_anything_starts(argv, message, capsys):
    from gdbfault.cli import main
    assert main(["attach", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("gdbfault: error: ") and message in err[0], err


def test_profile_takes_only_the_run_options_it_uses():
    profile = build_parser()._subcommands["profile"]
    flags = {s for a in profile._actions for s in a.option_strings}
    assert {"--kernel", "--variant", "--system-map", "--workload", "--iterations", "--append", "--no-icount",
            "--timeout", "--keep-run-dir"} <= flags
    assert not flags & {"--backend", "--probe", "--live", "--no-trace", "--cost-sample", "--live-patch"}
