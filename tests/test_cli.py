"""The command line as a user meets it."""

import json
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
