"""``mathrl demo [--out runs/demo]``: both studies in miniature on the tiny model, then their reports."""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("runs/demo"),
        help="folder for every run, trace file and report (rerun to resume)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="every stage for a few steps only (a smoke test of the pipeline, ~3 minutes)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from mathrl.console import make_console
    from mathrl.demo import BASELINES, FULL, QUICK, run_demo, stages

    console = make_console()
    log = lambda line: console.print(line, markup=False, highlight=False)  # noqa: E731
    scale = QUICK if args.quick else FULL
    start = time.perf_counter()
    run_demo(args.out, scale, log)
    for study, baseline in BASELINES.items():
        console.print()
        console.print(summary_table(args.out, study, baseline, stages(args.out, scale)))
    log(f"\ndemo finished in {(time.perf_counter() - start) / 60:.1f} min; everything is under {args.out}/:")
    log(f"  reports:  {args.out}/report/study1/report.md, {args.out}/report/study2/report.md")
    log("  plots:    accuracy.png, frontier.png, training_<run>.png in each report folder")
    log("  samples:  samples.html in each report folder (open it in a browser)")
    log("  runs:     one folder per stage (config.yaml, metrics.jsonl, checkpoints, eval/)")
    return 0


def summary_table(out: Path, study: int, baseline: str, plan):
    """The study's runs on arith: accuracy with CI, the paired difference to its baseline with
    Holm's p, and tokens (with their change against the baseline)."""
    from rich.table import Table

    from mathrl.report import build_report

    labels = {s.name: s.label for s in plan if s.study == study and s.label}
    names, results, comparisons = build_report([out / r for r in labels], baseline)
    by_run = {c.run: c for c in comparisons if c.benchmark == "arith"}
    base_tokens = results[baseline]["arith"].metrics["mean_tokens"]
    heading = {1: "Study 1: math reasoning post-training", 2: "Study 2: token-efficient reasoning"}[study]
    table = Table(
        title=f"{heading}, in miniature: arith test, greedy; Δ and p paired against {baseline} "
        "(* Holm-significant)",
        title_justify="left",
    )
    for column in ("run", "accuracy %", "Δ pts [95% CI]", "p (Holm)", "tokens", "Δ tokens", "efficiency"):
        table.add_column(column, justify="left" if column == "run" else "right", no_wrap=True)
    for name in names:
        m = results[name]["arith"].metrics
        c = by_run.get(name)
        diff = f"{100 * c.diff:+.1f} [{100 * c.ci[0]:+.1f}, {100 * c.ci[1]:+.1f}]" if c else ""
        p = (f"{c.p_holm:.2g}" + (" *" if c.p_holm < 0.05 and not c.flags else "")) if c else ""
        change = round(100 * (m["mean_tokens"] / base_tokens - 1))
        tokens = (f"{change:+d}%" if change else "0%") if c else ""
        table.add_row(
            f"{labels[name]} ({name})",
            f"{100 * m['accuracy']:.1f} ± {100 * m['ci95_normal']:.1f}",
            diff,
            p,
            f"{m['mean_tokens']:.1f}",
            tokens,
            f"{m['efficiency']:.2f}",
        )
    return table
