"""report.png: target accuracy against the number of pretraining classes, as in Hong et al.'s figures.

Two panels (all samples, hard samples), log x. One curve per label hierarchy (the taxonomy and each control
hierarchy of launch/arms/hierarchies.py) and transfer mode, with error bars over seeds: a colour per hierarchy, a
line style per mode. Every point's level is named with its class count beside it; the x ticks are the class
counts, thinned so that no two tick labels overlap (measured on the rendered figure). Arms drawn otherwise: a star
per result (multi-level pretraining), a horizontal band (the scratch baseline); chance is a dotted line.
"""

from __future__ import annotations

from pathlib import Path

from launch import arms

MODE_STYLES = ("-", "--", ":", "-.")
MODE_MARKERS = ("o", "s", "^", "D")


def hierarchy_of(r: dict) -> str:
    """The label hierarchy a report row's pretraining level belongs to ('' for a row not drawn as a curve)."""
    a = arms.origin(r["kind"], r["arm"])
    return a.hierarchy(r["arm"]) if a.plot == "line" and r["pretrain_level"] else ""


def curves(rows: list[dict], which: str) -> dict[tuple[str, str], list[dict]]:
    """(hierarchy, mode) -> its rows with a value for `which` (all | hard), fewest classes first; taxonomy first."""
    out: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        h = hierarchy_of(r)
        if h and r[f"acc_{which}_mean"] is not None:
            out.setdefault((h, r["mode"]), []).append(r)
    for pts in out.values():
        pts.sort(key=lambda r: r["pretrain_classes"])
    return dict(sorted(out.items(), key=lambda kv: (kv[0][0] != "taxonomy", kv[0])))


def plot(rows: list[dict], target: str, target_classes: int, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig = figure(rows, target, target_classes)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def figure(rows: list[dict], target: str, target_classes: int):
    """The figure of report.png (a matplotlib Figure, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chance = 1.0 / target_classes
    hierarchies = list(dict.fromkeys(h for h, _ in curves(rows, "all")))
    modes = sorted({r["mode"] for r in rows if hierarchy_of(r)})
    colour = {h: f"C{i % 10}" for i, h in enumerate(hierarchies)}
    fig, axes = plt.subplots(1, 2, figsize=(12, 5), sharey=True, sharex=True)
    named_in: list[list] = []  # per panel: the level-name labels, one per level
    for ax, which, title in ((axes[0], "all", "all samples"), (axes[1], "hard", "hard samples")):
        named = []
        named_in.append(named)
        for (h, mode), pts in curves(rows, which).items():
            i = modes.index(mode) % len(MODE_STYLES)
            ax.errorbar([r["pretrain_classes"] for r in pts], [r[f"acc_{which}_mean"] for r in pts],
                        yerr=[r[f"acc_{which}_std"] or 0.0 for r in pts], color=colour[h], linestyle=MODE_STYLES[i],
                        marker=MODE_MARKERS[i], capsize=3, label=f"{h} ({mode})")
            for r in pts:
                if r["pretrain_level"] not in {t.get_text().split(" (")[0] for t in named}:
                    named.append(ax.annotate(f"{r['pretrain_level']} ({r['pretrain_classes']})",
                                             (r["pretrain_classes"], r[f"acc_{which}_mean"]), xytext=(4, 4),
                                             textcoords="offset points", fontsize=7, color=colour[h]))
                if r["pretrain_level"] == target:  # the baseline "pretrain directly on the target level"
                    ax.scatter([r["pretrain_classes"]], [r[f"acc_{which}_mean"]], s=120, facecolors="none",
                               edgecolors="k", zorder=3)
        for r in rows:
            m, s = r[f"acc_{which}_mean"], r[f"acc_{which}_std"] or 0.0
            style = arms.origin(r["kind"], r["arm"]).plot
            if m is None or hierarchy_of(r):
                continue
            if style == "marker":  # one star each, at the class count of its pretraining level
                ax.errorbar([r["pretrain_classes"]], [m], yerr=[s], marker="*", markersize=10, capsize=3,
                            linestyle="none", label=f"{r['arm']} -> {target} ({r['mode']})")
            elif style == "band":  # no pretraining level to put it at: a horizontal line and its spread
                ax.axhline(m, color="grey", linestyle="--",
                           label=arms.origin(r["kind"], r["arm"]).setting(r["pretrain_level"], target))
                ax.axhspan(m - s, m + s, color="grey", alpha=0.15)
        ax.axhline(chance, color="k", linestyle=":", linewidth=1, label=f"chance ({100 * chance:.1f}%)")
        ax.set_xscale("log")
        ax.set_xlabel("pretraining classes (log scale)")
        ax.set_title(f"{target} top-1, {title}")
        ax.grid(True, which="major", alpha=0.3)
        ax.minorticks_off()
    axes[0].set_ylabel("target accuracy")
    handles, labels = axes[0].get_legend_handles_labels()
    order = sorted(range(len(labels)), key=lambda i: labels[i].startswith("chance"))  # the curves first
    handles, labels = [handles[i] for i in order], [labels[i] for i in order]
    fig.legend(handles, labels, loc="lower center", ncol=min(4, max(1, len(labels))), fontsize=8)
    fig.text(0.99, 0.99, "circled: pretrained on the target level itself", ha="right", va="top", fontsize=7)
    fig.tight_layout(rect=(0, 0.06 + 0.035 * ((len(labels) - 1) // 4), 1, 0.97))
    xs = sorted({r["pretrain_classes"] for r in rows if hierarchy_of(r)})
    if xs:
        _class_ticks(fig, axes, xs)
    for named in named_in:
        _declutter(fig, named)
    return fig


def _class_ticks(fig, axes, xs: list[int]) -> None:
    """x ticks at the class counts drawn, the ones whose label would overlap an earlier one left out."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter, NullLocator

    lo, hi = min(xs), max(xs)
    for ax in axes:
        ax.set_xlim(lo / 1.6, hi * 1.6)
        ax.xaxis.set_major_locator(FixedLocator(xs))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{round(v)}"))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_minor_formatter(NullFormatter())
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    labels = [t for t in axes[0].get_xticklabels() if t.get_text()]
    kept, last = [], None
    for x, t in zip(xs, labels):
        box = t.get_window_extent(renderer).expanded(1.15, 1.0)
        if last is None or box.x0 > last.x1:
            kept.append(x)
            last = box
    for ax in axes:
        ax.xaxis.set_major_locator(FixedLocator(kept))


def _declutter(fig, texts: list) -> None:
    """Moves each level-name label up (then down) until it overlaps no earlier one."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    placed = []
    for t in texts:
        x, y = t.xyann
        for step in (0, 9, -9, 18, -18, 27, -27, 36):
            t.xyann = (x, y + step)
            box = t.get_window_extent(renderer)
            if not any(box.overlaps(p) for p in placed):
                break
        placed.append(t.get_window_extent(renderer))
