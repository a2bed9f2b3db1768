"""Report plots (matplotlib PNG): accuracy with CI bars, the accuracy-vs-tokens frontier, and a
run's training curves from its ``metrics.jsonl``.

Figures are built with matplotlib's object API (``Figure`` + the Agg canvas), not pyplot: no
global state, no display needed, safe to call from a training process or a test.
"""

from __future__ import annotations

import re
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from mathrl.fileio import write_atomic_bytes
from mathrl.train.sink import read_metrics

# metrics[run][benchmark] -> the metrics dict of eval.metrics.summarize
Metrics = dict[str, dict[str, dict]]


def save_png(fig: Figure, path: Path) -> Path:
    """Write ``fig`` to ``path`` atomically."""
    import io

    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    # No timestamp or version in the PNG: the same data gives the same bytes.
    fig.savefig(buffer, format="png", dpi=120, metadata={"Software": None})
    write_atomic_bytes(Path(path), buffer.getvalue())
    return Path(path)


def accuracy_figure(names: list[str], metrics: Metrics) -> Figure:
    """Grouped bars: one group per benchmark, one bar per run, 95% CI as error bars."""
    benches = sorted({b for run in metrics.values() for b in run})
    width = 0.8 / max(1, len(names))
    fig = Figure(figsize=(max(6.0, 1.2 + len(benches) * (0.5 + 0.35 * len(names))) + 1.8, 4.5))
    ax = fig.add_subplot()
    for i, run in enumerate(names):
        xs, ys, lows, highs = [], [], [], []
        for j, b in enumerate(benches):
            m = metrics[run].get(b)
            if m is None:
                continue
            acc, ci = 100 * m["accuracy"], 100 * m["ci95_normal"]
            xs.append(j - 0.4 + width * (i + 0.5))
            ys.append(acc)
            # The normal interval can leave [0, 100] near the ends; the bar must not.
            lows.append(acc - max(0.0, acc - ci))
            highs.append(min(100.0, acc + ci) - acc)
        ax.bar(xs, ys, width=width * 0.9, yerr=[lows, highs], capsize=3, label=run)
    ax.set_xticks(range(len(benches)), benches)
    ax.set_ylabel("accuracy (%)")
    ax.set_xlabel("benchmark")
    ax.set_ylim(0, 100)
    ax.set_title("Accuracy by benchmark (95% CI)")
    ax.grid(axis="y", alpha=0.3)
    # Beside the axes, not over the bars.
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0), title="run")
    fig.tight_layout()
    return fig


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point beats on both axes (fewer tokens, higher accuracy), by tokens."""
    front, best = [], -1.0
    for tokens, acc in sorted(points, key=lambda p: (p[0], -p[1])):
        if acc > best:
            front.append((tokens, acc))
            best = acc
    return front


def frontier_figure(names: list[str], metrics: Metrics) -> Figure:
    """Accuracy against mean tokens, one panel per benchmark, the Pareto front drawn through."""
    benches = sorted({b for run in metrics.values() for b in run})
    fig = Figure(figsize=(4.2 * len(benches), 4.2))
    colors = {run: f"C{i % 10}" for i, run in enumerate(names)}
    for k, b in enumerate(benches):
        ax = fig.add_subplot(1, len(benches), k + 1)
        points = []
        for run in names:
            m = metrics[run].get(b)
            if m is None:
                continue
            tokens, acc, ci = m["mean_tokens"], 100 * m["accuracy"], 100 * m["ci95_normal"]
            points.append((tokens, acc))
            ax.errorbar(tokens, acc, yerr=[[min(ci, acc)], [min(ci, 100 - acc)]], fmt="o",
                        color=colors[run], capsize=3, label=run)
        front = pareto_front(points)
        ax.plot([p[0] for p in front], [p[1] for p in front], "--", color="gray", alpha=0.6,
                label="frontier")
        # From zero: token savings read as shares of the whole length.
        ax.set_xlim(0, 1.2 * max((p[0] for p in points), default=1.0))
        ax.set_ylim(bottom=0)
        ax.set_xlabel("mean tokens per response")
        ax.set_ylabel("accuracy (%)")
        ax.set_title(b)
        ax.grid(alpha=0.3)
        if k == 0:
            ax.legend(fontsize="small", loc="lower left")
    fig.suptitle("Accuracy vs tokens (up and left is better)")
    fig.tight_layout()
    return fig


# (panel title, y label, patterns of metric keys drawn in it). Eval accuracy is drawn separately.
PANELS = (
    ("reward", "mean reward", (r"reward/.*",)),
    ("accuracy", "accuracy (%)", ()),
    ("tokens", "tokens per response", (r"tokens/mean", r"tokens/thinking_mean")),
    ("loss", "loss", (r"train/loss",)),
)


def _ema(values: list[float], alpha: float = 0.1) -> list[float]:
    out, level = [], None
    for v in values:
        level = v if level is None else (1 - alpha) * level + alpha * v
        out.append(level)
    return out


def training_figure(run_dir: Path) -> Figure | None:
    """Reward, eval accuracy, tokens and loss against step from ``run_dir/metrics.jsonl``; None when
    the run logged no steps (an eval-only run)."""
    lines = [line for line in read_metrics(run_dir) if "step" in line]
    if not lines:
        return None
    series: dict[str, list[tuple[int, float]]] = {}
    for line in lines:
        for key, value in line.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                series.setdefault(key, []).append((line["step"], value))
    eval_keys = sorted(k for k in series if re.fullmatch(r"eval/[^/]+/accuracy", k))
    panels = []
    for title, ylabel, patterns in PANELS:
        keys = sorted(k for k in series if any(re.fullmatch(p, k) for p in patterns))
        if title == "accuracy":
            keys = eval_keys
        # One curve per distinct series: with one reward part, reward/mean repeats it.
        keys = [k for i, k in enumerate(keys) if all(series[k] != series[j] for j in keys[:i])]
        if keys:
            panels.append((title, ylabel, keys))
    if not panels:
        return None
    columns = min(2, len(panels))
    rows = (len(panels) + 1) // 2
    fig = Figure(figsize=(5.0 * columns, 3.5 * rows))
    first = None
    for k, (title, ylabel, keys) in enumerate(panels):
        # One step axis for all panels: a single eval point sits where it happened in training.
        ax = fig.add_subplot(rows, columns, k + 1, sharex=first)
        first = first or ax
        for i, key in enumerate(keys):
            steps = [s for s, _ in series[key]]
            values = [v for _, v in series[key]]
            color = f"C{i % 10}"
            if title == "accuracy":
                cis = [100 * v for _, v in series.get(key.replace("/accuracy", "/ci95_normal"), [])]
                ax.errorbar(steps, [100 * v for v in values], yerr=cis if len(cis) == len(values) else None,
                            fmt="o-", color=color, capsize=3, label=key.split("/")[1])
            elif len(values) > 10:
                # Per-step RL numbers are noisy: the raw line faint, its moving average on top.
                ax.plot(steps, values, color=color, alpha=0.25)
                ax.plot(steps, _ema(values), color=color, label=f"{key} (EMA)")
            else:
                ax.plot(steps, values, "o-", color=color, label=key)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="x-small")
    fig.suptitle(f"Training curves: {Path(run_dir).name}")
    fig.tight_layout()
    return fig
