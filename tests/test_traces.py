"""Trace files and their collection: resumable, the one grader, shortest-correct selection."""

import json
import subprocess
import sys

import pytest

from mathrl.collect import CollectConfig, collect_stats, collect_traces, progress_path, select_correct
from mathrl.data.rows import DataError
from mathrl.tasks import arith
from mathrl.traces import Trace, filter_traces, read_traces
from mathrl.types import Completion


def _c(text, n, finish="stop"):
    return Completion(token_ids=tuple(range(n)), logprobs=(0.0,) * n, text=text, finish_reason=finish)


def test_select_correct_keeps_finished_correct_samples_and_the_shortest():
    group = [_c("a", 8), _c("b", 5), _c("c", 6), _c("d", 3, "length"), _c("e", 6)]
    correct = [True, False, True, True, True]
    assert select_correct(group, correct, "all") == [0, 2, 4]  # the truncated one is never kept
    assert select_correct(group, correct, "shortest") == [2]  # first of the ties
    assert select_correct(group, [False] * 5, "shortest") == []


class FakeSampler:
    """Answers correctly on every third sample, with a length that depends on the sample."""

    def __init__(self):
        self.calls = 0

    def sample(self, prompts, n, params):
        self.calls += 1
        out = []
        for messages in prompts:
            question = messages[-1]["content"]
            problem = next(p for p in PROBLEMS if p.problem == question)
            group = []
            for j in range(n):
                answer = problem.answer if (j + params.seed) % 3 == 0 else "-1"
                group.append(_c(f"{'x' * j} $\\boxed{{{answer}}}$", 10 + j + (params.seed % 7)))
            out.append(group)
        return out


PROBLEMS = arith.generate("train", 20, seed=0, levels=[1])


def test_collect_is_resumable_and_equals_an_uninterrupted_run(tmp_path):
    cfg = CollectConfig(source="fake", dataset="arith_train", n=4, keep="shortest", chunk_size=6)
    whole = tmp_path / "whole.jsonl"
    stats = collect_traces(FakeSampler(), PROBLEMS, "boxed", cfg, whole)
    traces = read_traces(whole)
    assert len(traces) == stats["traces"] == stats["problems_with_correct"] > 0
    assert all(
        t.messages[-1]["role"] == "assistant" and t.metadata["dataset"] == "arith_train" for t in traces
    )
    records = [json.loads(line) for line in progress_path(whole).read_text().splitlines()[1:]]
    assert stats == collect_stats(records) and stats["problems"] == 20

    # A kill after the traces of chunk 2 were written but before its progress lines.
    part = tmp_path / "part.jsonl"
    collect_traces(FakeSampler(), PROBLEMS[:6], "boxed", cfg, part)
    extra = [t.to_json() for t in traces if t.metadata["problem_id"] in {p.id for p in PROBLEMS[6:12]}]
    with part.open("a") as f:
        f.write("\n".join(extra) + "\n" + extra[0][:40])  # and a torn line
    sampler = FakeSampler()
    resumed = collect_traces(sampler, PROBLEMS, "boxed", cfg, part)
    assert sampler.calls == 3  # chunks 2-4 only
    assert part.read_text() == whole.read_text()
    assert resumed == stats
    # The same model behind a server that moved: resumed, nothing sampled again.
    moved = FakeSampler()
    assert collect_traces(moved, PROBLEMS, "boxed", cfg, part, endpoint="http://127.0.0.1:9/v1") == stats
    assert moved.calls == 0 and part.read_text() == whole.read_text()
    with pytest.raises(Exception, match=r"other settings \(keep: 'shortest' -> 'all'; n: 4 -> 1\)"):
        collect_traces(
            FakeSampler(), PROBLEMS, "boxed",
            CollectConfig(source="fake", dataset="arith_train", chunk_size=6), part
        )


def test_bad_trace_lines_name_the_file_line_and_field(tmp_path):
    path = tmp_path / "bad.jsonl"
    good = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    path.write_text(
        json.dumps(good) + "\n" + json.dumps({"messages": [{"role": "bot", "content": "a"}]}) + "\n"
    )
    with pytest.raises(DataError, match=r"bad\.jsonl:2: field 'messages\[0\]\.role'"):
        read_traces(path)
    path.write_text(json.dumps(good) + "\n{not json\n")
    with pytest.raises(DataError, match=r"bad\.jsonl:2"):
        read_traces(path)
    path.write_text(json.dumps({"messages": [{"role": "user", "content": "q"}]}) + "\n")
    with pytest.raises(DataError, match=r"bad\.jsonl:1: field 'messages' has no assistant turn"):
        read_traces(path)


def _trace(dataset, pid, tokens):
    return Trace(
        ({"role": "user", "content": pid}, {"role": "assistant", "content": "x" * tokens}),
        {"dataset": dataset, "problem_id": pid, "tokens": tokens},
    )


def test_filter_and_merge(tmp_path):
    a = [_trace("olympiadbench", "o1", 50), _trace("olympiadbench", "o2", 5000)]
    b = [_trace("math_hard", "m1", 90), _trace("math_hard", "m1", 30), _trace("math_hard", "m2", 70)]
    assert [t.metadata["problem_id"] for t in filter_traces(a + b, max_tokens=4096)] == [
        "o1",
        "m1",
        "m1",
        "m2",
    ]
    shortest = filter_traces(a + b, one_per_problem="shortest")
    assert [(t.metadata["problem_id"], t.tokens) for t in shortest] == [
        ("o1", 50),
        ("o2", 5000),
        ("m1", 30),
        ("m2", 70),
    ]
    assert len(filter_traces(a + b, datasets=["math_hard"], min_tokens=50)) == 2
    for name, traces in (("a", a), ("b", b)):
        (tmp_path / f"{name}.jsonl").write_text("".join(t.to_json() + "\n" for t in traces))
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "mathrl.cli",
            "traces",
            str(tmp_path / "a.jsonl"),
            str(tmp_path / "b.jsonl"),
            "--max-tokens",
            "4096",
            "--one-per-problem",
            "shortest",
            "--out",
            str(tmp_path / "merged.jsonl"),
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    merged = read_traces(tmp_path / "merged.jsonl")
    assert [(t.metadata["problem_id"], t.tokens) for t in merged] == [("o1", 50), ("m1", 30), ("m2", 70)]
    assert "wrote 3 traces" in out.stdout
