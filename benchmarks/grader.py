"""Grader speed and accuracy: mathrl vs math-verify on the same labelled pairs, in one process.

    python benchmarks/grader.py [--data-dir ../shared/data]

Reads grader_cases.jsonl (6,076 real (model answer, gold, label) rows; the 8 rows of
test/prealgebra/1462.json are dropped, their gold is mangled: see MANIFEST.md), grades every
pair with both graders on one core, and prints gradings per second, their ratio, and agreement
with the labels. math-verify is the Hugging Face grader (pip install mathrl[bench]).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path


def load_cases(data_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (data_dir / "grader_cases.jsonl").open()]
    return [r for r in rows if r["problem_id"] != "test/prealgebra/1462.json"]


def run_mathrl(cases: list[dict]) -> list[bool]:
    from mathrl.grading import answers_match

    return [answers_match(c["model_answer"], c["gold_answer"]) for c in cases]


def run_math_verify(cases: list[dict]) -> list[bool]:
    from math_verify import parse, verify

    out = []
    for c in cases:
        if c["model_answer"] is None:
            out.append(False)
            continue
        gold, pred = parse(f"${c['gold_answer']}$"), parse(f"${c['model_answer']}$")
        out.append(bool(verify(gold, pred)))
    return out


def measure(name: str, fn, cases: list[dict]) -> dict:
    fn(cases[:50])  # warm-up: imports and caches
    start = time.perf_counter()
    verdicts = fn(cases)
    seconds = time.perf_counter() - start
    agree = sum(v == c["label"] for v, c in zip(verdicts, cases, strict=True))
    return {"name": name, "seconds": seconds, "per_s": len(cases) / seconds,
            "agreement": agree / len(cases), "verdicts": verdicts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path,
                        default=Path(os.environ.get("MATHRL_DATA_DIR", "../shared/data")))
    args = parser.parse_args()
    cases = load_cases(args.data_dir)
    ours = measure("mathrl", run_mathrl, cases)
    peer = measure("math-verify 0.9", run_math_verify, cases)
    print(f"{len(cases)} labelled pairs from grader_cases.jsonl, one process")
    print(f"{'grader':<16} {'gradings/s':>12} {'seconds':>9} {'agreement':>10}")
    for r in (ours, peer):
        print(f"{r['name']:<16} {r['per_s']:>12,.0f} {r['seconds']:>9.2f} {r['agreement']:>10.2%}")
    print(f"speed ratio mathrl / math-verify: {ours['per_s'] / peer['per_s']:.1f}x")
    differ = [(c["model_answer"], c["gold_answer"], c["label"], a, b)
              for c, a, b in zip(cases, ours["verdicts"], peer["verdicts"], strict=True) if a != b]
    print(f"pairs where the two graders differ: {len(differ)}")
    for pred, gold, label, a, b in differ[:10]:
        print(f"  pred={pred!r} gold={gold!r} label={label} mathrl={a} math-verify={b}")


if __name__ == "__main__":
    main()
