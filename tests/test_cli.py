"""The command line as a user meets it."""

import json
import os
import subprocess
import sys

import pytest

from mathrl.cli import COMMANDS, main


def _mathrl(*args):
    return subprocess.run([sys.executable, "-m", "mathrl.cli", *args], capture_output=True,
                          text=True, timeout=300)


def test_help_lists_every_subcommand_with_a_description():
    out = _mathrl("--help")
    assert out.returncode == 0
    for name, _, description in COMMANDS:
        assert name in out.stdout and description[:30] in out.stdout.replace("\n", " ")
    toy = _mathrl("toy", "--help")
    assert "pretrain" in toy.stdout and "eval" in toy.stdout


def test_toy_eval_reports_accuracy(capsys):
    assert main(["toy", "eval", "--model", "tiny", "--num-problems", "9", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n"] == 9 and 0 <= result["correct"] <= 9
    assert result["accuracy"] == pytest.approx(result["correct"] / 9)
    assert set(result["per_level"]) == {"1", "2", "3"}


def test_missing_model_is_one_clear_error():
    out = _mathrl("toy", "eval", "--model", "/nonexistent/model-dir", "--num-problems", "1")
    assert out.returncode == 2
    assert "cannot load model '/nonexistent/model-dir'" in out.stderr
    assert "Traceback" not in out.stderr


def test_bad_levels_is_one_clear_error():
    out = _mathrl("toy", "eval", "--levels", "1,9", "--num-problems", "1")
    assert out.returncode == 2 and "--levels" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("argv", [
    ["grpo", "configs/study1/grpo_v2.yaml", "--out", "{tmp}/run", "max_steps=1"],
    ["eval", "--model", "Qwen/Qwen3-4B-Instruct-2507", "--benchmarks", "arith", "--out", "{tmp}/eval"]])
def test_a_hub_model_without_a_hub_fails_at_once_with_one_line(argv, tmp_path):
    # A hub that refuses connections and an empty cache: transformers alone would retry every
    # request for about a minute and then raise a traceback.
    env = {**os.environ, "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HOME": str(tmp_path / "hf")}
    out = subprocess.run([sys.executable, "-m", "mathrl.cli", *(a.format(tmp=tmp_path) for a in argv)],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert ("Qwen/Qwen3-4B-Instruct-2507 is not in the local Hugging Face cache and the hub cannot be "
            "reached (127.0.0.1:9: Connection refused)") in lines[0]


def test_in_a_log_long_stages_print_progress_lines_with_rate_and_eta(tmp_path):
    """A pipe shows no bar: eval prints a line per interval (here every update) and one at the end."""
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"} | {"MATHRL_PROGRESS_S": "0"}
    argv = ["eval", "--model", "tiny", "--benchmarks", "arith", "--num-problems", "12", "--chunk-size", "4",
            "--out", str(tmp_path / "eval")]
    out = subprocess.run([sys.executable, "-m", "mathrl.cli", *argv], capture_output=True, text=True, env=env,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    lines = [line for line in out.stdout.splitlines() if line.startswith("arith: ") and "/12 (" in line]
    assert [line.split(",")[0] for line in lines] == ["arith: 0/12 (0%)", "arith: 4/12 (33%)",
                                                       "arith: 8/12 (67%)", "arith: 12/12 (100%)"]
    assert "/s, ETA " in lines[1] and "ETA" not in lines[-1]
