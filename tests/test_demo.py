"""`mathrl demo --quick`: every stage of both studies runs, is reported, and a demo killed midway
resumes with nothing lost or doubled."""

import json
import os
import signal
import subprocess
import sys
import time

from mathrl.demo import QUICK, stages


def _demo(out, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "mathrl.cli", "demo", "--quick", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "COLUMNS": "160"}, **kwargs)


def _state(out):
    path = out / "demo_state.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def test_quick_demo_killed_midway_resumes_and_reports(tmp_path):
    out = tmp_path / "demo"
    plan = stages(out, QUICK)
    # Kill it (SIGKILL: no cleanup) once the SFT run has started, after distillation finished.
    first = _demo(out, start_new_session=True)
    deadline = time.time() + 600
    while not (out / "sft" / "config.yaml").is_file():
        assert first.poll() is None, first.stdout.read()
        assert time.time() < deadline
        time.sleep(0.2)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert "traces.jsonl" in _state(out) and "sft" not in _state(out)

    second = _demo(out)
    log, _ = second.communicate(timeout=900)
    assert second.returncode == 0, log
    assert "traces.jsonl: done before, skipped" in log  # finished stages are not redone
    assert list(_state(out)) == [s.name for s in plan]

    traces = [json.loads(line) for line in (out / "traces.jsonl").read_text().splitlines()]
    ids = [t["metadata"]["problem_id"] for t in traces]
    assert ids and len(ids) == len(set(ids))  # the kill doubled nothing
    for run in ("base", "teacher", "sft", "grpo", "sft_grpo", "grpo_hard", "grpo_continue", "verbose",
                "rs_sft", "efficiency_rl"):
        rows = (out / run / "eval" / "arith" / "samples.jsonl").read_text().splitlines()
        assert len(rows) == QUICK.eval_problems, run
    for study, runs in (("study1", 7), ("study2", 3)):
        report = (out / "report" / study / "report.md").read_text()
        assert report.count("\n| ") >= runs
        for name in ("accuracy.png", "frontier.png", "samples.html"):
            assert (out / "report" / study / name).is_file()
    assert (out / "report" / "study1" / "training_grpo.png").is_file()
    # The closing tables: one row per run of each study, against its own baseline.
    assert "Study 1: math reasoning post-training" in log and "Study 2: token-efficient reasoning" in log
    assert "paired against verbose" in log
    # The teacher server went away with the killed demo (it was started with --exit-with-parent).
    leftover = subprocess.run(["pgrep", "-f", "serve --model tiny-teacher --port 0 --exit-with-parent"],
                              capture_output=True, text=True)
    assert leftover.stdout.strip() == ""

    third = _demo(out)
    log, _ = third.communicate(timeout=300)
    assert third.returncode == 0 and log.count("done before, skipped") == len(plan)
