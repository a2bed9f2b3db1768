"""``mathrl view RUN_DIR... [--out FILE]``: one self-contained HTML page to browse graded samples."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "runs", nargs="+", type=Path, help="run folders (each with eval/<benchmark>/samples.jsonl)"
    )
    parser.add_argument("--out", type=Path, default=Path("samples.html"), help="the page to write")
    parser.add_argument("--title", default=None, help="page title (default: the run names)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from mathrl.fileio import write_atomic
    from mathrl.report import load_runs
    from mathrl.viewer import page_data, render_page

    data = page_data(load_runs(args.runs))
    title = args.title or "mathrl samples: " + ", ".join(data["runs"])
    write_atomic(args.out, render_page(data, title))
    print(
        f"wrote {args.out}: {len(data['samples'])} samples of {len(data['runs'])} run(s) on "
        f"{', '.join(data['benchmarks'])}; open it in a browser"
    )
    return 0
