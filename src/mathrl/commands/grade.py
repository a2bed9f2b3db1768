"""``mathrl grade FILE.jsonl``: grade (response or answer, gold) lines with the one grader."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, help="JSONL: each line has 'gold' and 'response' (full "
                        "model output) or 'answer' (already extracted); optional 'tolerance'")
    parser.add_argument("--extract", choices=["boxed", "gsm8k", "auto"], default="auto",
                        help="how to find the final answer in a response (default auto)")
    parser.add_argument("--out", type=Path, default=None, help="write here instead of stdout")
    parser.add_argument("--processes", type=int, default=None, help="grading processes (default: all cores)")
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds per comparison (default 2)")
    parser.set_defaults(run=run)


def _requests(path: Path, extract: str):
    from mathrl.data.rows import DataError
    from mathrl.grading.batch import GradeRequest

    rows, requests = [], []
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}:{line_no}: invalid JSON ({err.msg})") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{line_no}: expected a JSON object")
            if not isinstance(row.get("gold"), str | int | float) or isinstance(row.get("gold"), bool):
                raise DataError(f"{path}:{line_no}: field 'gold' is missing or not a string")
            if not isinstance(row.get("response", row.get("answer")), str | int | float):
                raise DataError(f"{path}:{line_no}: field 'response' (or 'answer') is missing")
            tolerance = row.get("tolerance")
            if tolerance is not None and not isinstance(tolerance, int | float):
                raise DataError(f"{path}:{line_no}: field 'tolerance' must be a number")
            response = row.get("response")
            requests.append(GradeRequest(
                gold=str(row["gold"]), response=None if response is None else str(response),
                answer=None if "answer" not in row or row["answer"] is None else str(row["answer"]),
                extract=extract, tolerance=tolerance))
            rows.append(row)
    return rows, requests


def run(args: argparse.Namespace) -> int:
    from mathrl.grading import grade_many

    rows, requests = _requests(args.file, args.extract)
    results = grade_many(requests, processes=args.processes, timeout=args.timeout)
    lines = [json.dumps({**row, "extracted": r.extracted, "correct": r.correct}, ensure_ascii=False)
             for row, r in zip(rows, results, strict=True)]
    text = "".join(line + "\n" for line in lines)
    if args.out is None:
        sys.stdout.write(text)
    else:  # written aside and renamed: an interrupted run leaves no half-written file
        args.out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=args.out.parent, prefix=args.out.name, suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, args.out)
    correct = sum(r.correct for r in results)
    print(f"graded {len(results)}: {correct} correct ({correct / max(1, len(results)):.1%})", file=sys.stderr)
    return 0
