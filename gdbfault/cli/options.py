"""What every command shares: its run options (model/spec.RUN_OPTIONS), outputs checked before the work, progress.

A command takes the run options it uses and refuses the rest: argparse
refuses an option a command never takes; `refuse` refuses one that a
command takes in one form but not in another (attach --port/--socket/--pid
counts on a QEMU gdbfault did not start), in one line naming the option,
before anything boots or connects (exit 2).
"""
import sys

from gdbfault.base.errors import GdbfaultError
from gdbfault.model.spec import OPTION, RUN_OPTIONS, RunSpec
from gdbfault.base.userfiles import check_output_dir, check_output_file

__all__ = ["add_run_options", "spec_from_args", "check_outputs", "progress_bar", "refuse", "given", "OUTPUTS"]


def add_run_options(parser, keys=None, leave_out=()):
    """The run options `keys` (default: all of RUN_OPTIONS, in their order) but `leave_out`."""
    for opt in RUN_OPTIONS:
        if (keys is None or opt.key in keys) and opt.key not in leave_out:
            parser.add_argument(opt.flag, dest=opt.key, **opt.cli)


def given(args, key):
    """Did the command line set option `key` to something else than its default?"""
    opt = OPTION.get(key)
    default = opt.cli.get("default") if opt is not None else None
    if opt is not None and opt.cli.get("action") == "store_false":
        default = True
    elif opt is not None and opt.cli.get("action") == "store_true":
        default = False
    value = getattr(args, key, default)
    return value not in (None, [], False) if default in (None, [], False) else value != default


def refuse(args, keys, why):
    """A one-line error for the first of `keys` the command line gave: `FLAG why`."""
    for key in keys:
        if given(args, key):
            flag = OPTION[key].flag if key in OPTION else "--" + key.replace("_", "-")
            raise GdbfaultError(f"{flag} {why}")


def spec_from_args(args, **fixed):
    """The RunSpec of a command's run options (model/spec.RunSpec.from_mapping names a bad one by
    its flag); `fixed` sets keys the command decides itself."""
    mapping = {opt.key: getattr(args, opt.key) for opt in RUN_OPTIONS if hasattr(args, opt.key)}
    return RunSpec.from_mapping({**mapping, **fixed})


# Every output option of every command: (argparse dest, flag, a file or a folder). A command's
# check_outputs(args) refuses any of them that cannot be written, before anything boots.
OUTPUTS = (("output", "--output", "file"), ("plot", "--plot", "file"), ("junit", "--junit", "file"),
           ("save_runs", "--save-runs", "folder"))


def check_outputs(args):
    """Everything cheap about where results go, before any kernel boots: each output a file
    (or folder) that can be written — not a directory, not in a missing or read-only folder."""
    for dest, flag, kind in OUTPUTS:
        value = getattr(args, dest, None)
        if value:
            (check_output_file if kind == "file" else check_output_dir)(value, flag)
    if getattr(args, "plot", None):
        from gdbfault.views.plot import require_matplotlib
        require_matplotlib()


def progress_bar(args):
    """(a tqdm bar on stderr when it is a terminal, its update function), else (None, None)."""
    if args.quiet or not sys.stderr.isatty():
        return None, None
    from tqdm import tqdm
    bar = tqdm(total=0, unit="it", file=sys.stderr, leave=False, dynamic_ncols=True)

    def update(done, total, hits):
        if total and bar.total != total:
            bar.total = total
        bar.n = done
        bar.set_postfix_str(f"{hits} hits", refresh=False)
        bar.refresh()
    return bar, update
