"""The fault index of a run: every costed fault's entry instruction count, shape and cost.

The path tracer writes it at the end of the counting replay (`faultprobe
index FILE`: gzip'd JSON, columns in entry order, the entry counts as
differences); it is kept beside the run's recording (`faults.idx`). A fault
is named three ways, as `gdbfault inspect` takes them:

- its number: the N-th fault entry of the workload (1-based, in instruction
  order; faults during the boot are left out, as the report leaves them out);
- its path: the shape as the report names it, or an alias (`user-signal`,
  `resolved`, `kernel-fixup`), then the slowest, the fastest or the K-th;
- its iteration: iteration K runs from the K-th fault that occurs once per
  iteration to the next one: a fault that raised a signal, when there are as
  many as iterations (the mprotect loop's, as the tracer's per-iteration
  cost counts them: also across a live patch, which changes their shape),
  else the first shape the workload hits as many times as it has iterations;
  faults before the first belong to iteration 0 (the workload's set-up). With
  neither, iterations are not known and the index says so.
"""
import gzip
import json
import statistics
from dataclasses import dataclass

from gdbfault.base.errors import GdbfaultError
from gdbfault.model.paths import SHAPE_ALIASES, classify, cost_stats
from gdbfault.model.roles import SIGNAL

__all__ = ["Fault", "FaultIndex", "INDEX_FILE"]

INDEX_FILE = "faults.idx"


@dataclass(frozen=True)
class Fault:
    number: int            # 1-based, among the workload's faults in instruction order
    icount: int            # guest instructions completed before the fault entry's first one
    shape: str
    events: tuple
    cost: int              # guest instructions from the entry to its return
    iteration: int = None  # None: not known


class FaultIndex:
    """The workload's faults of one run, in instruction order (see the module docstring)."""

    def __init__(self, faults, sample=1, iterations=None):
        self.sample = sample
        self.faults = faults
        self.iteration_shape = None
        if iterations:
            self._number_iterations(iterations)

    @classmethod
    def load(cls, path, iterations=None):
        """The index in file `path`; `iterations`: the guest's own iteration count (None: unknown)."""
        try:
            with gzip.open(path, "rt", encoding="utf-8") as f:
                data = json.load(f)
            shapes = [(s["phase"], tuple(s["events"])) for s in data["shapes"]]
            entry, faults = 0, []
            for delta, sid, cost in zip(data["entry"], data["shape"], data["cost"]):
                entry += delta
                phase, events = shapes[sid]
                if phase == "workload":
                    faults.append(Fault(len(faults) + 1, entry, classify(events), events, cost))
        except FileNotFoundError:
            raise GdbfaultError(f"the run's fault index {path} is missing") from None
        except (OSError, EOFError, ValueError, KeyError, IndexError, TypeError) as exc:
            raise GdbfaultError(f"the run's fault index {path} is unreadable ({type(exc).__name__}: {exc})") \
                from None
        return cls(faults, int(data.get("sample", 1)), iterations)

    def _number_iterations(self, iterations):
        counts, first = {}, {}
        for f in self.faults:
            for key in (f.shape, SIGNAL) if SIGNAL in f.events else (f.shape,):
                counts[key] = counts.get(key, 0) + 1
                first.setdefault(key, f.number)
        once = [s for s in counts if counts[s] == iterations]
        if not once:
            return
        self.iteration_shape = SIGNAL if SIGNAL in once else min(once, key=lambda s: first[s])
        k, numbered = 0, []
        for f in self.faults:
            if f.shape == self.iteration_shape or self.iteration_shape == SIGNAL and SIGNAL in f.events:
                k += 1
            numbered.append(Fault(f.number, f.icount, f.shape, f.events, f.cost, k))
        self.faults = numbered

    def __len__(self):
        return len(self.faults)

    def shape_names(self):
        """The shapes of the workload's faults, most frequent first."""
        counts = {}
        for f in self.faults:
            counts[f.shape] = counts.get(f.shape, 0) + 1
        return sorted(counts, key=lambda s: -counts[s])

    def resolve_shape(self, name, among=None):
        """The shape a user named (in full or by alias: of the faults `among`, default all); a one-line
        error naming the shapes there are."""
        shapes = self.shape_names() if among is None else list(dict.fromkeys(f.shape for f in among))
        if name in shapes:
            return name
        for candidate in SHAPE_ALIASES.get(name, ()):
            if candidate in shapes:
                return candidate
        known = ", ".join(repr(s) for s in shapes) or "none"
        aliases = ", ".join(a for a, c in SHAPE_ALIASES.items() if any(s in shapes for s in c))
        raise GdbfaultError(f"this run has no fault path {name!r}; its paths are {known}"
                            + (f" (aliases: {aliases})" if aliases else ""))

    def of_shape(self, shape):
        return [f for f in self.faults if f.shape == shape]

    def number(self, n):
        if not self.faults:
            raise GdbfaultError("the run traced no fault of the workload")
        if not 1 <= n <= len(self.faults):
            raise GdbfaultError(f"--fault {n} is out of range: the workload took faults 1 to {len(self.faults)}")
        return self.faults[n - 1]

    def pick(self, shape, how, k=None):
        """The slowest ("max"), fastest ("min") or K-th ("nth") fault of a shape (ties: the earliest)."""
        faults = self.of_shape(self.resolve_shape(shape))
        if how == "max":
            return max(faults, key=lambda f: (f.cost, -f.number))
        if how == "min":
            return min(faults, key=lambda f: (f.cost, f.number))
        if not 1 <= k <= len(faults):
            raise GdbfaultError(f"--nth {k} is out of range: the run has {len(faults)} faults of "
                                f"{faults[0].shape!r}")
        return faults[k - 1]

    def of_iteration(self, k):
        """The faults of iteration K; a one-line error when iterations are not known or K is out of range."""
        if self.iteration_shape is None:
            raise GdbfaultError("this run's iterations cannot be told apart by its faults (no fault path "
                                "occurs once per iteration): use --fault N or --path SHAPE")
        last = self.faults[-1].iteration if self.faults else 0
        mine = [f for f in self.faults if f.iteration == k]
        if not mine:
            raise GdbfaultError(f"--iteration {k} is out of range: the workload's faults span iterations "
                                f"{min(f.iteration for f in self.faults)} to {last}")
        return mine

    def previous(self, fault):
        """The fault before this one, or None."""
        return self.faults[fault.number - 2] if fault.number > 1 else None

    def median_instance(self, shape):
        """A fault of the shape whose cost is the shape's median (the first such), or the nearest."""
        faults = self.of_shape(shape)
        median = statistics.median_low([f.cost for f in faults])
        return next(f for f in faults if f.cost == median)

    def summary(self):
        """{shape: {count, median, min: {fault, iteration, icount, cost}, max: {...}}} for the run file."""
        def brief(f):
            return {"fault": f.number, "iteration": f.iteration, "icount": f.icount, "cost": f.cost}
        out = {}
        for shape in self.shape_names():
            faults = self.of_shape(shape)
            out[shape] = {"count": len(faults), "median": cost_stats([f.cost for f in faults])["median"],
                          "min": brief(min(faults, key=lambda f: (f.cost, f.number))),
                          "max": brief(max(faults, key=lambda f: (f.cost, -f.number)))}
        return out
