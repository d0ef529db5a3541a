"""`grainsweep sweep`, `grainsweep status` and `grainsweep report`: a label-granularity sweep and its results."""

from __future__ import annotations

import argparse

from launch import executors


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweep", help="pretrain at every level, transfer to the target, baselines (SLURM or local)",
                       description="Plans one pretraining run per (level, seed), transfers to the target level "
                                   "after each (afterok), and the baselines; submits what is not finished yet. "
                                   "Settings: launch/sweep_config.py; default sweep: launch/sweeps/default.yaml.")
    p.add_argument("config", nargs="?", default=None,
                   help="sweep YAML file, or the name of a packaged sweep (default: 'default')")
    p.add_argument("--executor", choices=executors.CHOICES, default=None,
                   help="where jobs run (sets executor.name; auto = slurm if sbatch is installed and its controller "
                        "answers, else local)")
    p.add_argument("--out", help="sweep folder (default: data/sweeps/<name>)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="dotted override of the sweep config, e.g. seeds=[0,1] or run.train.epochs=3")
    p.add_argument("--wait", action="store_true", help="(slurm) wait until every job has finished")
    p.add_argument("--report", action="store_true", help="write the report once the runs have finished")
    p.add_argument("--print-config", action="store_true", help="print the resolved sweep config and exit")
    p.add_argument("--dry-run", action="store_true",
                   help="check everything (datasets, levels, model, executor parameters), print the jobs by stage "
                        "with their dependencies and images to process, submit and write nothing into the sweep "
                        "folder (a synthetic dataset is still converted once if missing; nothing is trained)")
    p.set_defaults(run=run_sweep)

    s = sub.add_parser("status", help="state of each run of a sweep (done/running/pending/failed/blocked/todo)")
    s.add_argument("sweep_dir", help="sweep folder")
    s.set_defaults(run=run_status)

    r = sub.add_parser("report", help="write report.md, report.csv and report.png for a sweep")
    r.add_argument("sweep_dir", help="sweep folder")
    r.set_defaults(run=run_report)


def run_sweep(args: argparse.Namespace) -> int:
    from core.format import config as cfglib
    from launch import status, sweep, sweep_config

    cfg = sweep_config.load(sweep_config.sweep_file(args.config), args.overrides)
    if args.print_config:
        print(cfglib.to_yaml(cfg), end="")
        return 0
    if args.dry_run:
        print(sweep.dry_run(cfg, args.out, args.executor)[1])
        return 0
    plan, records = sweep.run_sweep(cfg, args.out, args.executor)
    for rec in records:
        if "array_id" in rec:
            print(f"stage {rec['stage']}: array {rec['array_id']} ({len(rec['jobs'])} jobs)")
    if args.wait:
        status.wait(plan.sweep_dir)
    rows = status.job_states(plan.sweep_dir)
    print(status.format_table(rows))
    if args.report and not any(r["state"] in ("pending", "running") for r in rows):
        _print_report(plan.sweep_dir)
    return 1 if any(r["state"] == "failed" for r in rows) else 0


def run_status(args: argparse.Namespace) -> int:
    from launch import status

    print(status.format_table(status.job_states(args.sweep_dir)))
    return 0


def run_report(args: argparse.Namespace) -> int:
    _print_report(args.sweep_dir)
    return 0


def _print_report(sweep_dir) -> None:
    from launch import report

    files = report.write_report(sweep_dir)
    print(files["md"].read_text())
    print("wrote " + ", ".join(str(p) for p in files.values()))
