"""``mathrl traces``: merge and filter chat JSONL trace files, and print their statistics."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", type=Path, help="chat JSONL files (merged in this order)")
    parser.add_argument("--out", type=Path, default=None, help="write the merged, filtered traces here "
                        "(without --out: statistics only)")
    parser.add_argument("--max-tokens", type=int, default=None, help="drop traces longer than this")
    parser.add_argument("--min-tokens", type=int, default=None, help="drop traces shorter than this")
    parser.add_argument("--datasets", default=None, help="comma-separated dataset names to keep")
    parser.add_argument("--one-per-problem", choices=("shortest", "first"), default=None,
                        help="keep one trace per (dataset, problem)")
    parser.add_argument("--shuffle", action="store_true", help="shuffle (seeded) instead of keeping order")
    parser.add_argument("--limit", type=int, default=None, help="keep at most this many")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import random

    from rich.table import Table

    from mathrl.console import make_console
    from mathrl.errors import UserError
    from mathrl.fileio import write_atomic
    from mathrl.traces import filter_traces, read_traces, trace_stats

    if args.out is not None and any(args.out.resolve() == p.resolve() for p in args.inputs):
        raise UserError(f"--out {args.out} is also an input; write to another file")
    merged = [t for path in args.inputs for t in read_traces(path)]
    datasets = [d.strip() for d in args.datasets.split(",")] if args.datasets else None
    kept = filter_traces(merged, max_tokens=args.max_tokens, min_tokens=args.min_tokens,
                         datasets=datasets, one_per_problem=args.one_per_problem)
    if args.shuffle:
        random.Random(args.seed).shuffle(kept)
    kept = kept[:args.limit] if args.limit is not None else kept
    console = make_console()
    table = Table("", "traces", "problems", "mean tokens", "median", "p90", "datasets")
    for label, traces in (("in", merged), ("kept", kept)):
        s = trace_stats(traces)
        fmt = lambda v: "-" if v is None else f"{v:.0f}"  # noqa: E731
        table.add_row(label, str(s["traces"]), str(s["problems"]), fmt(s["mean_tokens"]),
                      fmt(s["median_tokens"]), fmt(s["p90_tokens"]),
                      ", ".join(f"{k} {v}" for k, v in s["by_dataset"].items()))
    console.print(table)
    if args.out is not None:
        write_atomic(args.out, "".join(t.to_json() + "\n" for t in kept))
        console.print(f"wrote {len(kept)} traces to {args.out}")
    return 0
