"""A sweep's report: target accuracy (all samples and hard ones) against the number of pretraining classes.

report.csv - one row per setting: kind (transfer / scratch), arm ('' or 'multilevel'), mode (full / linear /
             select), pretraining level and its class count (which jobs go in which table, their labels and
             plot styles: each job's sweep arm, launch/arms/),
             seeds finished, mean and std (over seeds, ddof=1; 0 for one seed) of top-1 on all and hard samples.
report.md  - the same table (a cell with one seed: its value, no spread), the runs still missing, and the chance
             level; then the pretraining runs themselves read at the target level before any transfer (also
             report-pretrained.csv); then, where the
             sweep has clustering jobs, a table "Clustering of frozen pretrained features".
report-clustering.csv - that second table: one row per (pretraining level, evaluated level), seeds finished, mean
             and std over seeds of NMI, ARI and Hungarian accuracy of k-means (k = the evaluated level's classes)
             on the pretrained run's frozen val features (core/methods/clustering.py).
report-hierarchies.csv - where the sweep has control hierarchies (launch/arms/hierarchies.py): the transfer rows
             of every label hierarchy (the taxonomy and the controls), one row per (hierarchy, mode, pretraining
             level), as report.png's curves; also in report.md ("Target accuracy by pretraining hierarchy").
report.png - two panels (all, hard) as in Hong et al.'s figures: accuracy vs pretraining classes (log x), one
             curve per hierarchy and transfer mode with seed error bars, each point named by its level and class
             count; scratch (no pretraining) as a horizontal line with its band; chance as a dotted line
             (launch/report_plot.py).
"""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

from core.format.run_folder import RESULT_FILE
from launch import arms
from launch.plan import JobSpec, Plan, load_plan
from launch.report_plot import hierarchy_of, plot

FIELDS = ("kind", "arm", "mode", "pretrain_level", "pretrain_classes", "target_level", "target_classes", "seeds",
          "acc_all_mean", "acc_all_std", "acc_hard_mean", "acc_hard_std")
PRETRAINED_FIELDS = ("pretrain_level", "arm", "pretrain_classes", "target_level", "seeds", "acc_all_mean",
                     "acc_all_std", "acc_hard_mean", "acc_hard_std")
HIERARCHY_FIELDS = ("hierarchy", "arm", "mode", "pretrain_level", "pretrain_classes", "seeds", "acc_all_mean",
                    "acc_all_std", "acc_hard_mean", "acc_hard_std")
CLUSTER_METRICS = ("nmi", "ari", "acc")
CLUSTER_FIELDS = ("pretrain_level", "arm", "pretrain_classes", "eval_level", "eval_classes", "seeds",
                  *(f"{m}_{s}" for m in CLUSTER_METRICS for s in ("mean", "std")))


def collect(plan: Plan) -> tuple[list[dict], list[str]]:
    """(aggregated rows, names of runs without result.json); transfer and scratch runs only."""
    groups: dict[tuple, list[dict]] = {}
    missing = []
    t = plan.target_level
    for spec in _jobs(plan, "target"):
        key = (spec.kind, spec.mode, spec.pretrain_level, spec.arm)
        groups.setdefault(key, [])
        path = Path(spec.run_dir) / RESULT_FILE
        if not path.is_file():
            missing.append(spec.name)
            continue
        res = json.loads(path.read_text())
        groups[key].append({"seed": spec.seed, "all": res[f"acc1/{t}"], "hard": res.get(f"acc1_hard/{t}")})
    rows = []
    for (kind, mode, level, arm), runs in groups.items():
        alls = [r["all"] for r in runs]
        hards = [r["hard"] for r in runs if r["hard"] is not None]
        rows.append({"kind": kind, "arm": arm, "mode": mode, "pretrain_level": level,
                     "pretrain_classes": plan.classes[level] if level else 0, "target_level": t,
                     "target_classes": plan.target_classes, "seeds": len(runs),
                     "acc_all_mean": _mean(alls), "acc_all_std": _std(alls),
                     "acc_hard_mean": _mean(hards), "acc_hard_std": _std(hards)})
    # the rows without pretraining (scratch) first; then by mode, arm, most pretraining classes first
    rows.sort(key=lambda r: (r["pretrain_level"] != "", r["mode"], r["arm"], -r["pretrain_classes"]))
    return rows, missing


def collect_pretrained(plan: Plan) -> list[dict]:
    """The pretraining runs themselves at the target level, before any transfer: a finer level's network scored
    with its probabilities summed into the target's classes (core/train/metrics.py). One row per (level, arm);
    none where the target is not a level of the pretraining dataset."""
    t = plan.target_level
    groups: dict[tuple[str, str], list[dict]] = {}
    if not plan.shared:
        return []
    for spec in _jobs(plan, "pretrained"):
        path = Path(spec.run_dir) / RESULT_FILE
        if not path.is_file():
            continue
        res = json.loads(path.read_text())
        if f"acc1/{t}" in res:
            groups.setdefault((spec.pretrain_level, spec.arm), []).append(res)
    order = list(plan.classes)
    rows = []
    for (level, arm), runs in sorted(groups.items(), key=lambda kv: (order.index(kv[0][0]), kv[0][1])):
        alls = [r[f"acc1/{t}"] for r in runs]
        hards = [r[f"acc1_hard/{t}"] for r in runs if f"acc1_hard/{t}" in r]
        rows.append({"pretrain_level": level, "arm": arm, "pretrain_classes": plan.classes[level],
                     "target_level": t, "seeds": len(runs), "acc_all_mean": _mean(alls), "acc_all_std": _std(alls),
                     "acc_hard_mean": _mean(hards), "acc_hard_std": _std(hards)})
    return rows


def collect_clustering(plan: Plan) -> tuple[list[dict], list[str]]:
    """(rows, names of clustering jobs without result.json): one row per (pretraining level, evaluated level),
    finest pretraining level first, evaluated levels finest first."""
    order = list(plan.classes)  # finest first
    groups: dict[tuple[str, str], list[dict]] = {}
    missing = []
    for spec in _jobs(plan, "clustering"):
        path = Path(spec.run_dir) / RESULT_FILE
        if not path.is_file():
            missing.append(spec.name)
            continue
        for level, m in json.loads(path.read_text())["metrics"].items():
            groups.setdefault((spec.pretrain_level, spec.arm, level), []).append(m)
    rows = []
    for (pre, arm, level), runs in groups.items():
        row = {"pretrain_level": pre, "arm": arm, "pretrain_classes": plan.classes[pre], "eval_level": level,
               "eval_classes": plan.classes.get(level, 0), "seeds": len(runs)}
        for m in CLUSTER_METRICS:
            xs = [r[m] for r in runs]
            row[f"{m}_mean"], row[f"{m}_std"] = _mean(xs), _std(xs)
        rows.append(row)
    rank = {lv: i for i, lv in enumerate(order)}
    rows.sort(key=lambda r: (rank.get(r["pretrain_level"], len(rank)), r["arm"],
                             rank.get(r["eval_level"], len(rank))))
    return rows, missing


def _jobs(plan: Plan, table: str) -> list[JobSpec]:
    """The jobs whose arm files its results under `table` (launch/arms/base.py: Arm.table)."""
    return [j for j in plan.jobs if arms.runner(j.kind, j.mode, j.arm).table == table]


def _mean(xs: list[float]) -> float | None:
    return statistics.fmean(xs) if xs else None


def _std(xs: list[float]) -> float | None:
    return statistics.stdev(xs) if len(xs) > 1 else (0.0 if xs else None)


def write_report(sweep_dir: str | Path) -> dict[str, Path]:
    sweep_dir = Path(sweep_dir)
    plan = load_plan(sweep_dir)
    rows, missing = collect(plan)
    cluster_rows, cluster_missing = collect_clustering(plan)
    out = {"csv": sweep_dir / "report.csv", "md": sweep_dir / "report.md", "png": sweep_dir / "report.png"}
    _write_csv(out["csv"], FIELDS, rows)
    if _jobs(plan, "clustering"):
        out["clustering_csv"] = sweep_dir / "report-clustering.csv"
        _write_csv(out["clustering_csv"], CLUSTER_FIELDS, cluster_rows)
    md = _markdown(plan, rows, missing)
    pre_rows = collect_pretrained(plan)
    if pre_rows:
        out["pretrained_csv"] = sweep_dir / "report-pretrained.csv"
        _write_csv(out["pretrained_csv"], PRETRAINED_FIELDS, pre_rows)
        md += "\n" + _pretrained_markdown(plan, pre_rows)
    h_rows = collect_hierarchies(rows)
    if any(r["hierarchy"] != "taxonomy" for r in h_rows):  # with the taxonomy alone it is the table above
        out["hierarchies_csv"] = sweep_dir / "report-hierarchies.csv"
        _write_csv(out["hierarchies_csv"], HIERARCHY_FIELDS, h_rows)
        md += "\n" + _hierarchies_markdown(plan, h_rows)
    if "clustering_csv" in out:
        md += "\n" + _clustering_markdown(cluster_rows, cluster_missing)
    out["md"].write_text(md)
    plot(rows, plan.target_level, plan.target_classes, out["png"])
    return out


def collect_hierarchies(rows: list[dict]) -> list[dict]:
    """The transfer rows drawn as curves, with their hierarchy: taxonomy first, then by hierarchy, mode and most
    pretraining classes first."""
    out = [{"hierarchy": hierarchy_of(r), **r} for r in rows if hierarchy_of(r)]
    out.sort(key=lambda r: (r["hierarchy"] != "taxonomy", r["hierarchy"], r["mode"], -r["pretrain_classes"]))
    return out


def _hierarchies_markdown(plan: Plan, rows: list[dict]) -> str:
    lines = ["## Target accuracy by pretraining hierarchy", "",
             f"The curves of report.png: top-1 on `{plan.target_level}` after transfer, in %, mean ± std over "
             "seeds, per label hierarchy the networks were pretrained on (the dataset's taxonomy, and the control "
             "hierarchies derived from it: k-means within the target classes, k-means on the whole set, random "
             "groups of leaves, one class per sample).", "",
             "| hierarchy | mode | pretraining level | classes | seeds | all | hard |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['hierarchy']} | {r['mode']} | {r['pretrain_level']} | {r['pretrain_classes']} | "
                     f"{r['seeds']} | {_acc_cells(r)} |")
    lines.append("")
    return "\n".join(lines)


def _write_csv(path: Path, fields: tuple[str, ...], rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r[k] is None else round(r[k], 5) if isinstance(r[k], float) else r[k])
                        for k in fields})


def _fmt(mean: float | None, std: float | None, seeds: int) -> str:
    """A table cell in %: mean ± std over seeds; one seed has no spread to show, so just its value."""
    if mean is None:
        return "n/a"
    return f"{100 * mean:.1f}" if seeds < 2 else f"{100 * mean:.1f} ± {100 * (std or 0):.1f}"


def _acc_cells(r: dict) -> str:
    """The 'all' and 'hard' cells of a row."""
    return " | ".join(_fmt(r[f"acc_{w}_mean"], r[f"acc_{w}_std"], r["seeds"]) for w in ("all", "hard"))


def _markdown(plan: Plan, rows: list[dict], missing: list[str]) -> str:
    t = plan.target_level
    lines = [f"# Sweep report: {plan.sweep_dir.name}", "",
             f"Dataset `{plan.dataset}`; target level `{t}` ({plan.target_classes} classes, chance "
             f"{100 / plan.target_classes:.1f}%). Top-1 accuracy on the target, in %, mean ± std over seeds.", "",
             "| setting | mode | pretraining level | pretraining classes | seeds | all | hard |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        # a separate target's level may share a name with a pretraining level without being it
        setting = arms.origin(r["kind"], r["arm"]).setting(r["pretrain_level"], t if plan.shared else "")
        lines.append(f"| {setting} | {r['mode'] or '-'} | {r['pretrain_level'] or '-'} | "
                     f"{r['pretrain_classes'] or '-'} | {r['seeds']} | {_acc_cells(r)} |")
    lines.append("")
    if missing:
        lines += [f"Missing ({len(missing)} runs without result.json): " + ", ".join(missing), ""]
    return "\n".join(lines)


def _pretrained_markdown(plan: Plan, rows: list[dict]) -> str:
    t = plan.target_level
    lines = ["## Pretrained networks at the target level, before any transfer", "",
             f"Each pretraining run's own head scored on `{t}` (a finer level's class probabilities summed into the "
             f"`{t}` classes; no new head, no fine-tuning): top-1 in %, mean ± std over seeds. The theory's "
             "prediction is about these features; the transfer table above shows how much of it a transfer keeps.",
             "", "| pretraining level (classes) | seeds | all | hard |", "|---|---|---|---|"]
    for r in rows:
        arm = arms.origin(arms.SOURCE_KIND, r["arm"]).suffix
        lines.append(f"| {r['pretrain_level']}{arm} ({r['pretrain_classes']}) | {r['seeds']} | {_acc_cells(r)} |")
    lines.append("")
    return "\n".join(lines)


def _clustering_markdown(rows: list[dict], missing: list[str]) -> str:
    lines = ["## Clustering of frozen pretrained features", "",
             "k-means (k = the evaluated level's classes) on each pretrained run's L2-normalised pooled features of "
             "the val images, scored against that level's labels; mean ± std over seeds, in %. NMI and ARI are 100 "
             "for the classes exactly, ARI ~0 for chance; ACC = accuracy under the best one-to-one matching of "
             "clusters to classes (Hungarian).", "",
             "| pretraining level (classes) | evaluated level (classes) | seeds | NMI | ARI | ACC |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        arm = arms.origin(arms.SOURCE_KIND, r["arm"]).suffix
        cells = [_fmt(r[f"{m}_mean"], r[f"{m}_std"], r["seeds"]) for m in CLUSTER_METRICS]
        lines.append(f"| {r['pretrain_level']}{arm} ({r['pretrain_classes']}) | {r['eval_level']} "
                     f"({r['eval_classes']}) | {r['seeds']} | " + " | ".join(cells) + " |")
    lines.append("")
    if missing:
        lines += [f"Missing ({len(missing)} clustering jobs without result.json): " + ", ".join(missing), ""]
    return "\n".join(lines)

