"""`mathrl report`: numbers recomputed from samples, paired tests checked by hand, flags."""

import csv
import json
import os
import subprocess
import sys

import pytest

from mathrl.errors import UserError
from mathrl.report import build_report, render_markdown


def _write_run(root, name, bench, correct_by_problem, protocol=None, n=1):
    folder = root / name / "eval" / bench
    folder.mkdir(parents=True)
    rows = []
    for pid, outcomes in correct_by_problem.items():
        outcomes = outcomes if isinstance(outcomes, list) else [outcomes]
        assert len(outcomes) == n
        for i, ok in enumerate(outcomes):
            rows.append(
                {
                    "problem_id": pid,
                    "sample_index": i,
                    "correct": bool(ok),
                    "extracted": "1",
                    "answer_key": "1" if ok else "2",
                    "finish_reason": "stop",
                    "n_tokens": 10 + i,
                    "n_thinking_tokens": 4,
                }
            )
    (folder / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "metrics.json").write_text(json.dumps({"protocol": protocol or {"n": n, "temperature": 0.01}}))
    return root / name


def test_mcnemar_by_hand_and_the_table_recomputed(tmp_path):
    base = {f"p{i}": i < 10 for i in range(20)}  # right on p0-p9
    other = dict(base) | {f"p{i}": True for i in range(10, 16)} | {"p0": False}  # fixes 6, breaks 1
    runs = [_write_run(tmp_path, "base", "math500", base), _write_run(tmp_path, "other", "math500", other)]
    names, results, comparisons = build_report(runs)
    (c,) = comparisons
    assert (c.test, c.common) == ("mcnemar", 20)
    assert c.p == pytest.approx(2 * (1 + 7) / 2**7)  # 2 * P(Bin(7, 1/2) <= 1) = 0.125
    assert c.diff == pytest.approx(5 / 20)
    assert results["other"]["math500"].metrics["accuracy"] == 15 / 20
    text = render_markdown(names, results, comparisons, "base")
    assert "| other | **75.0 ± 19.0 (20x1)** |" in text  # 1.96 * sqrt(.75 * .25 / 20) = 19.0
    assert "| other | math500 | mcnemar | 20 | +25.0 |" in text


def test_bootstrap_for_several_samples_holm_and_flags(tmp_path):
    base = {f"p{i}": [i % 2 == 0, False] for i in range(30)}
    better = {f"p{i}": [True, True] for i in range(30)}
    runs = [_write_run(tmp_path, "base", "aime", base, n=2), _write_run(tmp_path, "rl", "aime", better, n=2)]
    _write_run(tmp_path, "base", "gsm8k", {"a": True, "b": False})
    _write_run(tmp_path, "rl", "gsm8k", {"a": True, "c": True}, protocol={"n": 1, "temperature": 0.6})
    names, results, comparisons = build_report(runs)
    by = {c.benchmark: c for c in comparisons}
    assert by["aime"].test == "bootstrap" and by["aime"].diff == pytest.approx(0.75) and by["aime"].p == 0.0
    assert by["gsm8k"].common == 1 and "problem sets differ (1 in common)" in by["gsm8k"].flags
    assert any("protocol differs: temperature" in f for f in by["gsm8k"].flags)
    # Holm over the two comparisons: the smaller p doubled, then the running maximum.
    assert by["aime"].p_holm == pytest.approx(min(1.0, 2 * by["aime"].p))
    assert by["gsm8k"].p_holm == max(by["aime"].p_holm, min(1.0, by["gsm8k"].p))
    text = render_markdown(names, results, comparisons, "base")
    assert "†" in text and "## Notes" in text
    with pytest.raises(UserError, match="--baseline"):
        build_report(runs, baseline="nope")


def test_a_sample_line_without_a_needed_field_is_named(tmp_path):
    run = _write_run(tmp_path, "base", "arith", {"p0": True})
    path = run / "eval" / "arith" / "samples.jsonl"
    row = json.loads(path.read_text())
    del row["n_tokens"]
    path.write_text(path.read_text() + json.dumps(row) + "\n")
    with pytest.raises(UserError, match=r"samples.jsonl:2: field 'n_tokens' missing"):
        build_report([run])


@pytest.mark.slow
def test_report_from_two_real_tiny_runs(tmp_path):
    env = {**os.environ, "COLUMNS": "200"}
    for name, model in (("base", "tiny"), ("teacher", "tiny-teacher")):
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "mathrl.cli",
                "eval",
                "--model",
                model,
                "--benchmarks",
                "arith",
                "--num-problems",
                "40",
                "--max-tokens",
                "128",
                "--out",
                str(tmp_path / name),
            ],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
        )
        assert out.returncode == 0, out.stderr
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "mathrl.cli",
            "report",
            str(tmp_path / "base"),
            str(tmp_path / "teacher"),
            "--out",
            str(tmp_path / "report"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader((tmp_path / "report" / "report.csv").open()))
    for row in rows:
        samples = [
            json.loads(line)
            for line in (tmp_path / row["run"] / "eval" / "arith" / "samples.jsonl").read_text().splitlines()
        ]
        assert float(row["accuracy"]) == sum(s["correct"] for s in samples) / len(samples)
        assert float(row["mean_tokens"]) == sum(s["n_tokens"] for s in samples) / len(samples)
    teacher = next(r for r in rows if r["run"] == "teacher")
    assert teacher["test"] == "mcnemar" and float(teacher["p_holm"]) < 0.05 and not teacher["flags"]
    report = (tmp_path / "report" / "report.md").read_text()
    assert "| teacher |" in report
    # The plots and the viewer come with the table, linked from it.
    for name in ("accuracy.png", "frontier.png"):
        assert f"]({name})" in report
        assert (tmp_path / "report" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "training_" not in report  # eval-only runs have no training curves
    page = (tmp_path / "report" / "samples.html").read_text()
    assert '"runs":["base","teacher"]' in page and page.count('"pid":') == 2 * 40
