"""The distillation pipeline as a user runs it: a stronger teacher served over HTTP by
`mathrl serve`, `mathrl distill`, `mathrl sft`, then the held-out gain; and rejection sampling."""

import json
import math
import re
import subprocess
import sys

import pytest

from mathrl.collect import collect_stats, progress_path
from mathrl.models import TINY_PATH
from mathrl.traces import read_traces

pytestmark = pytest.mark.slow  # end-to-end: servers and whole commands (make test-fast skips)


def _cli(*args, timeout=600):
    out = subprocess.run(
        [sys.executable, "-m", "mathrl.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**__import__("os").environ, "COLUMNS": "200"},
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_teacher_over_http_distilled_into_tiny_raises_held_out_accuracy(tmp_path):
    server = subprocess.Popen(
        [sys.executable, "-m", "mathrl.cli", "serve", "--model", "tiny-teacher", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        url = re.search(r"http://127\.0\.0\.1:\d+/v1", server.stdout.readline())[0]
        traces = tmp_path / "traces.jsonl"
        printed = _cli(
            "distill",
            "--teacher",
            url,
            "--dataset",
            "arith_train",
            "--levels",
            "1,2,3",
            "--num-problems",
            "500",
            "--out",
            str(traces),
        )
    finally:
        server.kill()
        server.wait()
    kept = read_traces(traces)
    assert all(t.metadata["source"] == "tiny-teacher" for t in kept)  # the model, not where it listened
    assert f"from tiny-teacher @ {url}" in printed
    assert len(kept) >= 425  # the teacher is right on ~93% of these problems
    assert re.search(r"\(9\d\.\d% yield\)", printed)

    _cli("sft", "configs/tiny/sft.yaml", f"data={traces}", "save_every=0", "--out", str(tmp_path / "sft"))
    rows = [json.loads(line) for line in (tmp_path / "sft" / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows if "train/loss" in r]
    assert steps == list(range(1, 4 * math.ceil(len(kept) / 32) + 1))  # the recipe's budget: 4 epochs of 32
    after = json.loads((tmp_path / "sft" / "eval" / "arith" / "metrics.json").read_text())
    base = json.loads((TINY_PATH / "pretrain.json").read_text())  # `mathrl toy eval` when it was trained
    assert after["problems"] == 300  # the same held-out problems
    assert after["accuracy"] >= base["accuracy"] + 0.15, (base["accuracy"], after["accuracy"])


def test_rejection_sampling_keeps_shorter_than_average_answers(tmp_path):
    out = tmp_path / "rs.jsonl"
    printed = _cli(
        "rejection-sample",
        "--model",
        "tiny",
        "--dataset",
        "arith_train",
        "--levels",
        "1,2",
        "--num-problems",
        "64",
        "--num-samples",
        "8",
        "--max-tokens",
        "128",
        "--out",
        str(out),
    )
    records = [json.loads(line) for line in progress_path(out).read_text().splitlines()[1:]]
    stats = collect_stats(records)
    traces = read_traces(out)
    assert len(traces) == stats["problems_with_correct"] > 10  # one per problem with a correct sample
    assert len({t.metadata["problem_id"] for t in traces}) == len(traces)
    kept_mean = sum(t.tokens for t in traces) / len(traces)
    assert kept_mean == stats["mean_kept_tokens"] < stats["mean_sample_tokens"]
    for r in records:  # each kept sample is the shortest correct finished one of its problem
        if r["kept"]:
            good = [t for t, c, f in zip(r["tokens"], r["correct"], r["finished"], strict=True) if c and f]
            assert r["tokens"][r["kept"][0]] == min(good)
    assert f"{100 * stats['token_reduction']:.1f}% fewer" in printed
