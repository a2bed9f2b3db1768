"""``mathrl report RUN_DIR... [--baseline NAME] [--out DIR]``: the ablation table from run folders,
its plots and the sample viewer."""

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
    parser.add_argument("--quiet", action="store_true", help="do not print the report")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object per run and benchmark instead of the markdown (scripts)")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.add_argument("--no-view", action="store_true", help="skip samples.html (the sample viewer)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import json

    from mathrl.fileio import write_atomic
    from mathrl.report import build_report, render_csv, render_markdown, report_rows

    names, results, comparisons = build_report(args.runs, args.baseline)
    figures = {} if args.no_plots else write_plots(args.runs, names, results, args.out)
    markdown = render_markdown(
        names, results, comparisons, args.baseline or names[0], args.alpha, figures=figures
    )
    write_atomic(args.out / "report.md", markdown)
    write_atomic(args.out / "report.csv", render_csv(names, results, comparisons))
    written = ["report.md", "report.csv", *figures.values()]
    if not args.no_view:
        from mathrl.viewer import page_data, render_page

        write_atomic(
            args.out / "samples.html",
            # The runs already loaded for the table: their samples are read once.
            render_page(page_data(results), "mathrl samples: " + ", ".join(names)),
        )
        written.append("samples.html")
    if args.json:
        print("".join(json.dumps(row) + "\n" for row in report_rows(names, results, comparisons)), end="")
        return 0
    if not args.quiet:
        print(markdown)
    print(f"wrote to {args.out}/: " + ", ".join(written))
    return 0


def write_plots(run_dirs: list[Path], names: list[str], results: dict, out: Path) -> dict[str, str]:
    """The report's figures, by caption -> file name under ``out``."""
    from mathrl.plots import accuracy_figure, frontier_figure, save_png, training_figure

    metrics = {r: {b: e.metrics for b, e in results[r].items()} for r in names}
    figures = {
        "Accuracy by benchmark (95% CI)": ("accuracy.png", accuracy_figure(names, metrics)),
        "Accuracy vs mean tokens": ("frontier.png", frontier_figure(names, metrics)),
    }
    for run_dir in run_dirs:
        fig = training_figure(run_dir)
        if fig is not None:
            figures[f"Training curves: {Path(run_dir).name}"] = (f"training_{Path(run_dir).name}.png", fig)
    for name, fig in figures.values():
        save_png(fig, out / name)
    return {caption: name for caption, (name, _) in figures.items()}
