"""``mathrl report RUN_DIR... [--baseline NAME] [--out DIR]``: the ablation table from run folders."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "runs", nargs="+", type=Path, help="run folders (each with eval/<benchmark>/samples.jsonl)"
    )
    parser.add_argument(
        "--baseline", default=None, help="run folder name to compare against (default: the first)"
    )
    parser.add_argument("--out", type=Path, default=Path("report"), help="where report.md and report.csv go")
    parser.add_argument("--alpha", type=float, default=0.05, help="family-wise error rate for Holm (0.05)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from mathrl.fileio import write_atomic
    from mathrl.report import build_report, render_csv, render_markdown

    names, results, comparisons = build_report(args.runs, args.baseline)
    markdown = render_markdown(names, results, comparisons, args.baseline or names[0], args.alpha)
    write_atomic(args.out / "report.md", markdown)
    write_atomic(args.out / "report.csv", render_csv(names, results, comparisons))
    print(markdown)
    print(f"wrote {args.out}/report.md and {args.out}/report.csv")
    return 0
