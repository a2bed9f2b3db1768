"""`mathrl eval` as a user runs it: tables, run folders, and resuming after a real kill."""

import json
import os
import signal
import subprocess
import sys

import pytest
from recipes import wait_until

from mathrl.eval.metrics import summarize


def _eval(out, *args, timeout=300):
    return subprocess.run([sys.executable, "-m", "mathrl.cli", "eval", "--model", "tiny", "--out", str(out),
                           *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "COLUMNS": "200"})


def _samples(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def _without_timing(metrics):
    return {k: v for k, v in metrics.items() if k != "timing"}


@pytest.mark.slow
def test_arith_eval_prints_a_table_and_writes_recomputable_metrics(tmp_path):
    out = _eval(tmp_path / "run", "--benchmarks", "arith", "--num-problems", "200")
    assert out.returncode == 0, out.stderr
    assert "acc % ± CI" in out.stdout and "arith" in out.stdout and "tokens: mean/median/p90" in out.stdout
    bench = tmp_path / "run" / "eval" / "arith"
    samples = _samples(bench / "samples.jsonl")
    metrics = json.loads((bench / "metrics.json").read_text())
    assert len(samples) == 200 and metrics["problems"] == 200
    assert metrics["accuracy"] == sum(s["correct"] for s in samples) / 200
    assert _without_timing(summarize([[s] for s in samples])) == {
        k: v for k, v in _without_timing(metrics).items() if k not in ("benchmark", "source", "protocol")}
    assert f"{100 * metrics['accuracy']:.1f} ± {100 * metrics['ci95_normal']:.1f}" in out.stdout
    assert 0.2 < metrics["accuracy"] < 0.5  # the shipped model's quoted level, on a subsample
    sink = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert sink[-1]["eval/arith/accuracy"] == metrics["accuracy"]


@pytest.mark.slow
def test_real_math500_prompts_end_to_end(tmp_path, data_dir):
    out = _eval(tmp_path / "run", "--benchmarks", "math500", "--num-problems", "20", "--max-tokens", "128",
                "--data-dir", str(data_dir), "--few-shot", "tinker_math", "--system-prompt", "",
                "--suffix", " Write your answer in \\boxed{} format.")
    assert out.returncode == 0, out.stderr
    samples = _samples(tmp_path / "run" / "eval" / "math500" / "samples.jsonl")
    rows = [json.loads(line) for line in (data_dir / "math500.jsonl").open()]
    golds = {row["id"]: row["answer"] for row in rows}
    assert len(samples) == 20 and all(golds[s["problem_id"]] == s["gold"] for s in samples)
    assert all(s["n_tokens"] <= 128 for s in samples)


RESUMABLE = ["--benchmarks", "arith", "--num-problems", "200", "--n", "2", "--temperature", "1.0",
             "--max-tokens", "96", "--chunk-size", "8"]


@pytest.mark.slow
def test_killed_eval_resumes_to_the_uninterrupted_result(tmp_path):
    reference = _eval(tmp_path / "reference", *RESUMABLE)
    assert reference.returncode == 0, reference.stderr
    expected = (tmp_path / "reference" / "eval" / "arith" / "samples.jsonl").read_text()

    run = tmp_path / "killed"
    samples = run / "eval" / "arith" / "samples.jsonl"
    command = [sys.executable, "-m", "mathrl.cli", "eval", "--model", "tiny", "--out", str(run), *RESUMABLE]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until(process, lambda: samples.exists() and samples.stat().st_size > 0, poll_s=0.02)
    process.send_signal(signal.SIGKILL)  # a real kill, mid-run
    process.wait()
    lines_at_kill = len(samples.read_text().splitlines())
    assert 0 < lines_at_kill < 400, "the kill should land mid-run"
    assert not (run / "eval" / "arith" / "metrics.json").exists()

    resumed = _eval(run, *RESUMABLE)
    assert resumed.returncode == 0, resumed.stderr
    assert samples.read_text() == expected  # nothing lost, nothing doubled, same samples
    def metrics(folder):
        return _without_timing(json.loads((folder / "eval" / "arith" / "metrics.json").read_text()))

    assert metrics(run) == metrics(tmp_path / "reference")


@pytest.mark.slow
def test_a_torn_last_line_is_dropped_and_redone(tmp_path):
    args = ["--benchmarks", "arith", "--num-problems", "24", "--chunk-size", "8", "--max-tokens", "64"]
    assert _eval(tmp_path / "a", *args).returncode == 0
    path = tmp_path / "a" / "eval" / "arith" / "samples.jsonl"
    complete = path.read_text()
    lines = complete.splitlines(keepends=True)
    path.write_text("".join(lines[:16]) + lines[16][:40])  # killed in the middle of a write
    assert _eval(tmp_path / "a", *args).returncode == 0
    assert path.read_text() == complete


@pytest.mark.slow
def test_rerun_with_other_settings_is_refused(tmp_path):
    assert _eval(tmp_path / "a", "--benchmarks", "arith", "--num-problems", "8").returncode == 0
    out = _eval(tmp_path / "a", "--benchmarks", "arith", "--num-problems", "8", "--temperature", "0.7")
    assert out.returncode == 2 and "other settings (temperature: 0.01 -> 0.7)" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize("args, message", [
    (["--benchmarks", "math501"], "unknown math501"),
    (["--benchmarks", "arith", "--model", "/no/such/model"], "cannot load model"),
])
def test_bad_arguments_are_one_line(tmp_path, args, message):
    out = _eval(tmp_path / "a", *args)
    assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr


@pytest.mark.slow
def test_an_incomplete_group_is_resampled_not_doubled(tmp_path):
    args = ["--benchmarks", "arith", "--num-problems", "16", "--n", "2", "--temperature", "1.0",
            "--chunk-size", "8", "--max-tokens", "48"]
    assert _eval(tmp_path / "a", *args).returncode == 0
    path = tmp_path / "a" / "eval" / "arith" / "samples.jsonl"
    complete = path.read_text()
    lines = complete.splitlines(keepends=True)
    path.write_text("".join(lines[:16] + lines[17:]))  # one sample of the 9th problem missing
    assert _eval(tmp_path / "a", *args).returncode == 0
    rows = _samples(path)
    assert len(rows) == 32 and len({(r["problem_id"], r["sample_index"]) for r in rows}) == 32
    assert sorted(path.read_text().splitlines()) == sorted(complete.splitlines())


def test_show_prompt_prints_the_exact_prompt_without_sampling(tmp_path):
    out = _eval(tmp_path / "never", "--benchmarks", "arith", "--few-shot", "mathrl", "--suffix", " Go.",
                "--system-prompt", "", "--show-prompt")
    assert out.returncode == 0, out.stderr
    assert '"role": "assistant"' in out.stdout and " Go." in out.stdout
    assert '"role": "system"' not in out.stdout
    assert "<|im_start|>user" in out.stdout  # the tiny tokenizer is local: the rendered text too
    assert not (tmp_path / "never").exists()  # nothing sampled, nothing written
