"""`mathrl toy pretrain` is seeded, writes a loadable folder, and matches what is shipped."""

import json
from dataclasses import asdict

import pytest
import torch

from mathrl.cli import main
from mathrl.models import TINY_PATH, load_model
from mathrl.toy.pretrain import REPORT_FILE, PretrainConfig, lr_at, pretrain

SHORT = PretrainConfig(steps=12, batch_size=8, tokenizer_problems=500, eval_problems=6,
                       bucket_batches=2, habit_steps=3)


def _weights(path):
    return load_model(path, torch.device("cpu"), torch.float32).state_dict()


@pytest.mark.slow
def test_same_seed_same_model_and_other_seed_differs(tmp_path):
    a = pretrain(tmp_path / "a", SHORT, log=lambda _: None)
    b = pretrain(tmp_path / "b", SHORT, log=lambda _: None)
    pretrain(tmp_path / "c", PretrainConfig(**{**asdict(SHORT), "seed": 1}), log=lambda _: None)
    wa, wb, wc = _weights(tmp_path / "a"), _weights(tmp_path / "b"), _weights(tmp_path / "c")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not all(torch.equal(wa[k], wc[k]) for k in wa if wa[k].shape == wc[k].shape)
    assert a["final_loss"] == b["final_loss"] and a["accuracy"] == b["accuracy"]
    assert not (tmp_path / "a.tmp").exists()  # written aside, then renamed into place


def test_training_lowers_the_loss(tmp_path):
    lines = []
    pretrain(tmp_path / "m", PretrainConfig(**{**asdict(SHORT), "steps": 40}), log=lines.append)
    losses = [float(ln.split("loss ")[1].split()[0]) for ln in lines if ln.startswith("step")]
    assert losses[-1] < losses[0] - 1.0


@pytest.mark.slow
def test_the_cli_writes_a_folder_that_loads(tmp_path, capsys):
    assert main(["toy", "pretrain", "--out", str(tmp_path / "m"), "--seed", "3", "--steps", "5",
                 "--habit-steps", "2"]) == 0
    assert "wrote" in capsys.readouterr().out
    report = json.loads((tmp_path / "m" / REPORT_FILE).read_text())
    assert report["config"]["seed"] == 3 and report["config"]["steps"] == 5
    assert main(["toy", "eval", "--model", str(tmp_path / "m"), "--num-problems", "3"]) == 0


def test_schedule_warms_up_then_decays_to_the_floor():
    cfg = PretrainConfig(steps=100, warmup_steps=10, lr=1e-3, min_lr_ratio=0.1)
    assert lr_at(0, cfg) == 1e-4 and lr_at(9, cfg) == 1e-3
    assert lr_at(50, cfg) < lr_at(20, cfg)
    assert abs(lr_at(100, cfg) - 1e-4) < 1e-12


def test_shipped_model_was_built_by_the_current_defaults():
    """If the generator or defaults change, the shipped model must be rebuilt (see docs/data.md)."""
    report = json.loads((TINY_PATH / REPORT_FILE).read_text())
    assert report["config"] == json.loads(json.dumps(asdict(PretrainConfig())))
    assert 0.15 <= report["accuracy"] <= 0.50  # mediocre on purpose
    # The habit phase (answering an intermediate result) costs points RL can win back.
    assert report["accuracy_before_habit"] >= report["accuracy"] + 0.05
    assert report["per_level"]["1"] > report["per_level"]["2"] + 0.3


def test_shipped_teacher_is_the_same_recipe_trained_longer_and_much_stronger():
    from mathrl.models import TEACHER_PATH, load_tokenizer
    from mathrl.toy.pretrain import TEACHER_CONFIG

    report = json.loads((TEACHER_PATH / REPORT_FILE).read_text())
    assert report["config"] == json.loads(json.dumps(asdict(TEACHER_CONFIG)))
    tiny_report = json.loads((TINY_PATH / REPORT_FILE).read_text())
    assert report["accuracy"] >= tiny_report["accuracy"] + 0.4
    assert load_tokenizer("tiny-teacher").get_vocab() == load_tokenizer("tiny").get_vocab()
