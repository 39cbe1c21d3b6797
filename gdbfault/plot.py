"""Plots of per-path cost distributions (matplotlib, written to a file)."""
from gdbfault.errors import GdbfaultError

__all__ = ["plot_paths", "plot_live_patch"]


def _pyplot():
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise GdbfaultError("--plot needs matplotlib", "pip install matplotlib")
    return plt


def plot_live_patch(result, path):
    """A live-patched run's timeline: hits per window of guest instructions, the patch marked."""
    lp = result.get("live_patch") or {}
    tl = lp.get("timeline")
    if not tl:
        raise GdbfaultError("nothing to plot: the run kept no timeline (it needs the GDB backend, "
                            "-icount and path tracing)")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 4))
    start, width = tl["start"], tl["width"]
    for role, counts in tl["hits"].items():
        xs = [(start + (i + 0.5) * width) / 1e6 for i in range(len(counts))]
        search = role == "exception search"    # the seed's subject: drawn on top
        ax.plot(xs, counts, marker=".", label=role, linewidth=2.5 if search else 1.2, zorder=3 if search else 2)
    if lp.get("icount") is not None:
        ax.axvline(lp["icount"] / 1e6, color="black", linestyle="--",
                   label=f"live patch (iteration {lp.get('at_iteration')})")
    if lp.get("unpatch_icount") is not None:
        ax.axvline(lp["unpatch_icount"] / 1e6, color="grey", linestyle=":",
                   label=f"unpatched (iteration {lp.get('unpatch_at_iteration')})")
    ax.set_xlabel("guest instructions (millions)")
    ax.set_ylabel(f"hits per {width:,} instructions")
    ax.set_title(f"{', '.join(f['name'] for f in lp['functions'])} replaced in the running kernel", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_paths(runs, path):
    """Draw each path's cost histogram; runs = [(label, RunResult)], overlaid per path."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise GdbfaultError("--plot needs matplotlib", "pip install matplotlib")
    shapes = []
    for _, result in runs:
        for p in result.get("paths") or []:
            if p.get("cost_hist") and p["shape"] not in shapes:
                shapes.append(p["shape"])
    if not shapes:
        raise GdbfaultError("nothing to plot: no path costs were measured (run with -icount, the default)")
    fig, axes = plt.subplots(len(shapes), 1, figsize=(8, 2.6 * len(shapes)), squeeze=False)
    for ax, shape in zip(axes[:, 0], shapes):
        for label, result in runs:
            row = next((p for p in result.get("paths") or [] if p["shape"] == shape), None)
            if not row or not row.get("cost_hist"):
                continue
            costs = [int(c) for c in row["cost_hist"]]
            counts = list(row["cost_hist"].values())
            ax.bar(costs, counts, width=max(1.0, (max(costs) - min(costs)) / 80 or 1.0),
                   alpha=0.6, label=f"{label} (median {row['median']})")
        ax.set_title(shape, fontsize=10)
        ax.set_xlabel("guest instructions, fault entry to return")
        ax.set_ylabel("faults")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
