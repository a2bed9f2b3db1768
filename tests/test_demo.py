"""`mathrl demo --quick`: every stage of both studies runs, is reported, and a demo killed midway
resumes with nothing lost or doubled."""

import json
import os
import signal
import subprocess
import sys

import pytest
from recipes import wait_until

from mathrl.collect import progress_path
from mathrl.demo import QUICK, stages

pytestmark = pytest.mark.slow

# A log, not a terminal: no COLUMNS, stdout a pipe (what CI and `| tee` see).
ENV = {k: v for k, v in os.environ.items() if k != "COLUMNS"}


def _demo(out, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "mathrl.cli", "demo", "--quick", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV, **kwargs)


def _state(out):
    path = out / "demo_state.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def test_quick_demo_killed_midway_resumes_and_reports(tmp_path):
    out = tmp_path / "demo"
    plan = stages(out, QUICK)
    # Kill it (SIGKILL: no cleanup, the teacher server included) in the middle of distillation:
    # the rerun starts the teacher on another port and must resume the traces, not refuse them.
    first = _demo(out, start_new_session=True)
    progress = progress_path(out / "traces.jsonl")
    mid = wait_until(first, lambda: progress.is_file() and len(progress.read_text().splitlines()) >= 2)
    assert mid, first.communicate()[0]  # it got to distillation (and did not end before)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    done_at_kill = len(progress.read_text().splitlines()) - 1
    assert 0 < done_at_kill < QUICK.distill_problems, "the kill should land mid-distillation"
    assert "traces.jsonl" not in _state(out)

    second = _demo(out)
    log, _ = second.communicate(timeout=900)
    second_log = log
    assert second.returncode == 0, log
    assert "base: done before, skipped" in log  # finished stages are not redone
    assert f"resuming {out}/traces.jsonl: {done_at_kill} of {QUICK.distill_problems} problems" in log
    assert list(_state(out)) == [s.name for s in plan]
    progress_lines = progress.read_text().splitlines()[1:]
    problem_ids = {json.loads(r)["problem_id"] for r in progress_lines}
    assert len(progress_lines) == len(problem_ids) == QUICK.distill_problems

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

    # Every logged command line is whole on one line, and one pasted back into a shell runs.
    commands = [line[2:] for line in second_log.splitlines() if line.startswith("$ mathrl ")]
    ran = len(plan) - second_log.count("done before, skipped")
    assert len(commands) == ran + 1  # the stages that ran, and the teacher's server
    report = next(c for c in commands if c.startswith("mathrl report") and "study2" in c)
    shell_env = {**ENV, "PATH": os.path.dirname(sys.executable) + os.pathsep + ENV.get("PATH", "")}
    pasted = subprocess.run(report.replace("--quiet", "--json"), shell=True, capture_output=True, text=True,
                            env=shell_env, timeout=300)
    assert pasted.returncode == 0, pasted.stderr
    rows = [json.loads(line) for line in pasted.stdout.splitlines()]
    assert {r["run"] for r in rows} == {"verbose", "rs_sft", "efficiency_rl"}
