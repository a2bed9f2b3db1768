"""Report plots: the figures carry the numbers, axes and labels they claim, and save as real PNGs."""

import io

import pytest
from PIL import Image

from mathrl.plots import accuracy_figure, frontier_figure, pareto_front, save_png, training_figure
from mathrl.train.sink import MetricsSink


def _metrics(acc, ci, tokens):
    return {"accuracy": acc, "ci95_normal": ci, "mean_tokens": tokens}


METRICS = {
    "base": {"arith": _metrics(0.30, 0.09, 35.0), "gsm8k": _metrics(0.02, 0.03, 44.0)},
    "rl": {"arith": _metrics(0.45, 0.10, 30.0)},
}


def test_pareto_front_by_hand():
    points = [(40, 50.0), (30, 45.0), (35, 40.0), (50, 50.0), (60, 70.0), (20, 10.0)]
    assert pareto_front(points) == [(20, 10.0), (30, 45.0), (40, 50.0), (60, 70.0)]


def test_accuracy_bars_heights_error_bars_and_labels():
    fig = accuracy_figure(["base", "rl"], METRICS)
    (ax,) = fig.axes
    heights = [round(p.get_height(), 6) for p in ax.patches]
    assert heights == [30.0, 2.0, 45.0]  # base on both benchmarks, rl on arith only
    assert ax.get_ylabel() == "accuracy (%)" and ax.get_xlabel() == "benchmark"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["arith", "gsm8k"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["base", "rl"]
    # Error bar of base on gsm8k: 2 - 3 would go below zero, the bar stops at 0.
    segments = [seg for coll in ax.collections for seg in coll.get_segments()]
    lows_highs = sorted((round(s[0][1], 6), round(s[1][1], 6)) for s in segments)
    assert lows_highs == [(0.0, 5.0), (21.0, 39.0), (35.0, 55.0)]


def test_frontier_axes_and_front():
    fig = frontier_figure(["base", "rl"], METRICS)
    assert [ax.get_title() for ax in fig.axes] == ["arith", "gsm8k"]
    arith = fig.axes[0]
    assert arith.get_xlabel() == "mean tokens per response" and arith.get_ylabel() == "accuracy (%)"
    front = next(line for line in arith.get_lines() if line.get_label() == "frontier")
    assert list(front.get_xdata()) == [30.0]  # rl is shorter and better: base is off the front
    assert arith.get_xlim()[0] == 0


def test_training_curves_from_metrics_jsonl(tmp_path):
    sink = MetricsSink(tmp_path)
    for step in range(1, 21):
        sink.log({"reward/mean": step / 20, "reward/correct": step / 20, "tokens/mean": 40 - step / 2,
                  "train/loss": 1 / step}, step=step)
        if step % 10 == 0:
            sink.log({"eval/arith/accuracy": step / 40, "eval/arith/ci95_normal": 0.05}, step=step)
    fig = training_figure(tmp_path)
    assert [ax.get_title() for ax in fig.axes] == ["reward", "accuracy", "tokens", "loss"]
    assert all(ax.get_xlabel() == "step" for ax in fig.axes)
    reward = fig.axes[0]
    # reward/mean repeats reward/correct: drawn once (a faint raw line and its moving average).
    assert [t.get_text() for t in reward.get_legend().get_texts()] == ["reward/correct (EMA)"]
    accuracy = fig.axes[1]
    (bars,) = accuracy.containers
    line = bars.lines[0]
    assert bars.get_label() == "arith"
    assert list(line.get_xdata()) == [10, 20] and list(line.get_ydata()) == [25.0, 50.0]


def test_eval_only_run_has_no_training_curves(tmp_path):
    MetricsSink(tmp_path).log({"eval/arith/accuracy": 0.5})
    assert training_figure(tmp_path) is None
    assert training_figure(tmp_path / "missing") is None


def test_png_is_real_and_reproducible(tmp_path):
    fig = accuracy_figure(["base", "rl"], METRICS)
    first = save_png(fig, tmp_path / "a.png").read_bytes()
    second = save_png(fig, tmp_path / "b.png").read_bytes()
    assert first == second
    image = Image.open(io.BytesIO(first))
    assert image.format == "PNG"
    assert image.size == (round(fig.get_figwidth() * 120), round(fig.get_figheight() * 120))
    # Not blank: the bars' default colours (C0 blue, C1 orange) are on the page.
    colors = {c[:3] for _, c in image.convert("RGBA").getcolors(maxcolors=1 << 20)}
    assert (31, 119, 180) in colors and (255, 127, 14) in colors
    assert not (tmp_path / "a.png.tmp").exists()


@pytest.mark.parametrize("figure", [accuracy_figure, frontier_figure])
def test_a_run_without_a_benchmark_is_left_out_not_an_error(figure):
    assert figure(["rl"], {"rl": METRICS["rl"]}).axes
