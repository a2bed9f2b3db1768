"""``mathrl grade FILE.jsonl``: grade (response or answer, gold) lines with the one grader."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

# The grader's own constants (mathrl.grading.EXTRACT_MODES, DEFAULT_APPROX_DIGITS), spelled out so
# that building the CLI does not import sympy; a test keeps them equal.
EXTRACT_MODES = ("boxed", "boxes", "gsm8k", "auto")
DEFAULT_APPROX_DIGITS = 6


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, help="JSONL: each line has 'gold' and 'response' (full "
                        "model output) or 'answer' (already extracted); optional 'tolerance'")
    parser.add_argument("--extract", choices=EXTRACT_MODES, default="auto",
                        help="how to find the final answer in a response (default auto; see "
                        "mathrl.grading.extract)")
    parser.add_argument("--approx-digits", type=_digits, default=DEFAULT_APPROX_DIGITS, metavar="N|exact",
                        help="significant digits a rounded decimal needs to equal an exact answer such "
                        f"as 1/12 or sqrt(2) (default {DEFAULT_APPROX_DIGITS}); 'exact' turns rounding off")
    parser.add_argument("--out", type=Path, default=None, help="write here instead of stdout")
    parser.add_argument("--processes", type=int, default=None,
                        help="grading processes (default: all cores; 0: grade in this process)")
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds per comparison (default 2)")
    parser.set_defaults(run=run)


def _digits(value: str) -> int | None:
    if value == "exact":
        return None
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number or 'exact', got {value!r}")
    return int(value)


def _requests(path: Path, extract: str, approx_digits: int | None):
    from mathrl.data.rows import DataError, read_file_rows
    from mathrl.grading.grader import GradeRequest

    rows, requests = [], []
    for row in read_file_rows(path):
        if row.error is not None:
            raise DataError(f"{row.where}: {row.error}")
        data = row.data
        if not isinstance(data.get("gold"), str | int | float) or isinstance(data.get("gold"), bool):
            raise DataError(f"{row.where}: field 'gold' is missing or not a string")
        if not isinstance(data.get("response", data.get("answer")), str | int | float):
            raise DataError(f"{row.where}: field 'response' (or 'answer') is missing")
        tolerance = data.get("tolerance")
        if tolerance is not None and not isinstance(tolerance, int | float):
            raise DataError(f"{row.where}: field 'tolerance' must be a number")
        response = data.get("response")
        requests.append(GradeRequest(
            gold=str(data["gold"]), response=None if response is None else str(response),
            answer=None if data.get("answer") is None else str(data["answer"]),
            extract=extract, tolerance=tolerance, approx_digits=approx_digits))
        rows.append(data)
    return rows, requests


def run(args: argparse.Namespace) -> int:
    import os

    from mathrl.fileio import write_atomic
    from mathrl.grading import Grader

    rows, requests = _requests(args.file, args.extract, args.approx_digits)
    processes = (os.cpu_count() or 1) if args.processes is None else args.processes
    results = Grader(timeout=args.timeout, processes=processes).grade_requests(requests)
    lines = [json.dumps({**row, "extracted": r.extracted, "correct": r.correct,
                         **({"timed_out": True} if r.timed_out else {})}, ensure_ascii=False)
             for row, r in zip(rows, results, strict=True)]
    text = "".join(line + "\n" for line in lines)
    if args.out is None:
        sys.stdout.write(text)
    else:
        write_atomic(args.out, text)
    correct = sum(r.correct for r in results)
    timeouts = sum(r.timed_out for r in results)
    print(f"graded {len(results)}: {correct} correct ({correct / max(1, len(results)):.1%})"
          + (f", {timeouts} timed out (not counted correct)" if timeouts else ""), file=sys.stderr)
    return 0
