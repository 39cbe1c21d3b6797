"""Plots of per-path cost distributions (matplotlib, written to a file).

Path costs are few distinct values with very uneven counts (2,000 faults at
168 instructions, one demand-zero fault at 8,443): a linear bar chart shrinks
the real distribution to a sliver. Each cost is drawn as a stem with a dot,
on log axes when the values span a wide range, and far-off costs are labelled
with their value and count, so a single outlier is visible without hiding the
rest.
"""
from gdbfault.base.errors import GdbfaultError
from gdbfault.model.result import as_result

__all__ = ["plot_paths", "plot_live_patch", "require_matplotlib"]

WIDE_RANGE = 8          # max/min ratio from which an axis goes logarithmic
OUTLIER = 3             # a cost this many times off the median is labelled


def plot_live_patch(result, path):
    """A live-patched run's timeline: hits per window of guest instructions, the patch marked."""
    lp = as_result(result).live_patch
    tl = lp.timeline if lp is not None else None
    if not tl:
        raise GdbfaultError("nothing to plot: the run kept no timeline (it needs the GDB backend, "
                            "-icount and path tracing)")
    plt = require_matplotlib()
    fig, ax = plt.subplots(figsize=(9, 4))
    start, width = tl["start"], tl["width"]
    for role, counts in tl["hits"].items():
        xs = [(start + (i + 0.5) * width) / 1e6 for i in range(len(counts))]
        search = role == "exception search"    # the seed's subject: drawn on top
        ax.plot(xs, counts, marker=".", label=role, linewidth=2.5 if search else 1.2, zorder=3 if search else 2)
    if lp.icount is not None:
        ax.axvline(lp.icount / 1e6, color="black", linestyle="--",
                   label=f"live patch (iteration {lp.at_iteration})")
    if lp.unpatch_icount is not None:
        ax.axvline(lp.unpatch_icount / 1e6, color="grey", linestyle=":",
                   label=f"unpatched (iteration {lp.unpatch_at_iteration})")
    ax.set_xlabel("guest instructions (millions)")
    ax.set_ylabel(f"hits per {width:,} instructions")
    ax.set_title(f"{', '.join(f['name'] for f in lp.functions)} replaced in the running kernel", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def require_matplotlib():
    """Fail early (before any run) when --plot cannot be drawn."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise GdbfaultError("--plot needs matplotlib", "pip install matplotlib") from None
    return plt


def _rows(runs, shape):
    for label, result in runs:
        row = result.path(shape)
        if row is not None and row.cost_hist:
            costs = [int(c) for c in row.cost_hist]
            counts = [int(n) for n in row.cost_hist.values()]
            yield label, row, costs, counts


def _panel(ax, runs, shape):
    from matplotlib.ticker import MaxNLocator, NullFormatter, NullLocator, ScalarFormatter
    rows = list(_rows(runs, shape))
    all_costs = [c for _, _, costs, _ in rows for c in costs]
    all_counts = [n for _, _, _, counts in rows for n in counts]
    log_x = min(all_costs) > 0 and max(all_costs) / min(all_costs) >= WIDE_RANGE
    log_y = max(all_counts) / max(1, min(all_counts)) >= WIDE_RANGE * 4
    base = 0.7 if log_y else 0
    for i, (label, row, costs, counts) in enumerate(rows):
        color = f"C{i}"
        ax.vlines(costs, base, counts, color=color, linewidth=2, alpha=0.7)
        ax.plot(costs, counts, "o", color=color, markersize=4,
                label=f"{label} (median {row.median}, {sum(counts)} faults)")
        median = row.median or 1
        for c, n in zip(costs, counts):
            if c >= median * OUTLIER or c * OUTLIER <= median:
                ax.annotate(f"{c} ×{n}", (c, n), textcoords="offset points", xytext=(0, 5),
                            ha="center", fontsize=7, color=color)
    distinct = sorted(set(all_costs))
    if log_x:
        ax.set_xscale("log")
        ax.set_xlim(min(all_costs) / 1.4, max(all_costs) * 1.4)
        fmt = ScalarFormatter()
        fmt.set_scientific(False)
        ax.xaxis.set_major_formatter(fmt)
        ax.xaxis.set_minor_formatter(NullFormatter())
    else:
        pad = max(2.0, (max(all_costs) - min(all_costs)) * 0.08, max(all_costs) * 0.03)
        ax.set_xlim(min(all_costs) - pad, max(all_costs) + pad)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if len(distinct) <= 8:             # few costs: label each one where it is
        ax.set_xticks(distinct)
        ax.set_xticklabels([str(c) for c in distinct])
        ax.xaxis.set_minor_locator(NullLocator())
    if log_y:
        ax.set_yscale("log")
        ax.set_ylim(base, max(all_counts) * 3)
    else:
        ax.set_ylim(0, max(all_counts) * 1.2)
    ax.set_title(shape, fontsize=10)
    ax.set_xlabel("guest instructions, fault entry to return" + (" (log scale)" if log_x else ""))
    ax.set_ylabel("faults" + (" (log scale)" if log_y else ""))
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8)


def plot_paths(runs, path):
    """Draw each path's cost distribution; runs = [(label, RunResult)], overlaid per path."""
    plt = require_matplotlib()
    runs = [(label, as_result(result)) for label, result in runs]
    shapes = []
    for _, result in runs:
        for p in result.paths or []:
            if p.cost_hist and p.shape not in shapes:
                shapes.append(p.shape)
    if not shapes:
        raise GdbfaultError("nothing to plot: no path costs were measured (run with -icount, the default)")
    fig, axes = plt.subplots(len(shapes), 1, figsize=(8, 2.8 * len(shapes)), squeeze=False)
    for ax, shape in zip(axes[:, 0], shapes):
        _panel(ax, runs, shape)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
