"""Running several RunSpecs as one set: `run_all`, in parallel threads when the machine has cores to spare.

Every run is resolved (backends/plan.py: its files, symbols, architectures and
probes checked) before any boots, so a bad run refuses the whole set at once.
Each run_qemu call has its own QEMU, GDB and run directory, so runs share
nothing but the stop flag (base/lifecycle.py): a stop signal ends them all, and a
failed run's error is raised once every run has ended, with what every run
measured attached for --output.
"""
import os
from concurrent.futures import ThreadPoolExecutor, wait

from gdbfault.base.errors import GdbfaultError
from gdbfault.backends.plan import resolve_run
from gdbfault.base.lifecycle import Stopped, request_stop
from gdbfault.runs.booted import run_qemu

__all__ = ["run_all"]


def run_all(specs, parallel=True):
    """{name: RunResult} for {name: RunSpec}; parallel when >1 core.

    A failed run raises its error once every run has ended (no QEMU is left
    behind), with `.partial` = what every run measured, for --output. A stop
    signal (Ctrl-C, SIGTERM, SIGHUP) stops all runs at once; then the error
    is the stop, with exit code 128 + its number.
    """
    names = list(specs)
    for name in names:           # every run is checked first: a mistake in one boots none of them
        try:
            resolve_run(specs[name])
        except GdbfaultError as exc:
            exc.args = (f"run '{name}': {exc}",)
            exc.partial = {}
            raise
    workers = min(len(names), os.cpu_count() or 1) if parallel else 1
    outcomes, stopped = {}, None
    if workers <= 1:
        for name in names:
            try:
                outcomes[name] = ("ok", run_qemu(specs[name]))
            except BaseException as exc:        # noqa: B036 — kept to report it after teardown
                outcomes[name] = ("error", exc)
                break                           # a failed or stopped run ends the set
    else:
        pool = ThreadPoolExecutor(max_workers=workers)
        try:
            futures = {name: pool.submit(run_qemu, specs[name]) for name in names}
            while True:
                try:
                    if all(f.done() for f in futures.values()):
                        break
                    wait(list(futures.values()), timeout=0.5)
                except KeyboardInterrupt as exc:   # the runs poll the stop flag and end
                    stopped = stopped or (exc if isinstance(exc, Stopped) else Stopped())
                    request_stop(stopped.signum)
            for name, future in futures.items():
                exc = future.exception()
                outcomes[name] = ("ok", future.result()) if exc is None else ("error", exc)
        finally:
            pool.shutdown(wait=True)
    results = {name: (value if kind == "ok" else getattr(value, "result", None))
               for name, (kind, value) in outcomes.items()}
    results = {name: r for name, r in results.items() if r is not None}
    errors = [(name, value) for name, (kind, value) in outcomes.items() if kind == "error"]
    if stopped is not None:
        err = GdbfaultError(str(stopped))
        err.exit_code = stopped.exit_code
        err.partial = results
        raise err
    if errors:
        name, exc = errors[0]
        if isinstance(exc, GdbfaultError):
            exc.args = (f"run '{name}': {exc}",)
        exc.partial = results              # what every run measured, for --output
        raise exc
    return results
