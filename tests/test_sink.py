"""The one metrics sink, and its TensorBoard and wandb (offline) mirrors."""

import json

import pytest

from mathrl.errors import UserError
from mathrl.train.sink import MetricsSink, read_metrics


def test_lines_are_namespaced_stepped_and_dropped_after_a_resume_point(tmp_path):
    sink = MetricsSink(tmp_path)
    for step in (1, 2, 3):
        sink.log({"train/loss": 1.0 / step}, step=step)
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write('{"step": 4, "train/lo')  # torn by a kill
    sink.drop_after(2)
    assert [(r["step"], r["train/loss"]) for r in read_metrics(tmp_path)] == [(1, 1.0), (2, 0.5)]
    with pytest.raises(ValueError):
        sink.log({"train/loss": float("nan")}, step=3)  # never a line JSON readers reject


def test_tensorboard_mirror(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    sink = MetricsSink(tmp_path, mirror="tensorboard")
    sink.log({"train/loss": 0.5, "reward/mean": 0.25}, step=1)
    sink.log({"train/loss": 0.25}, step=2)
    sink.close()
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("train/loss")] == [(1, 0.5), (2, 0.25)]
    assert len(read_metrics(tmp_path)) == 2  # metrics.jsonl stays the record


def test_wandb_mirror_offline(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    sink = MetricsSink(tmp_path, mirror="wandb", config={"lr": 1e-3})
    sink.log({"train/loss": 0.5}, step=1)
    sink.close()
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))
    assert json.loads((tmp_path / "metrics.jsonl").read_text())["train/loss"] == 0.5


def test_unknown_mirror_is_refused(tmp_path):
    with pytest.raises(UserError, match="mirror must be one of"):
        MetricsSink(tmp_path, mirror="mlflow")
