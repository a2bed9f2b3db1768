"""The one metrics sink: ``RUN/metrics.jsonl``, one JSON line per logged step, namespaced keys
(``train/loss``, ``eval/arith/accuracy``, ``time/step_s``). TensorBoard or wandb only mirror it.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

from mathrl.errors import UserError
from mathrl.fileio import write_atomic, writing

MIRRORS = ("none", "tensorboard", "wandb")


class MetricsSink:
    """Appends metric lines to ``out_dir/metrics.jsonl`` (each line flushed), mirrors them if asked.

    ``mirror``: ``"tensorboard"`` writes event files under ``out_dir/tensorboard``; ``"wandb"``
    logs to a wandb run (``WANDB_MODE=offline`` works without a network). Both are optional
    installs.
    """

    def __init__(
        self,
        out_dir: str | Path,
        mirror: str = "none",
        run_name: str | None = None,
        config: dict | None = None,
    ):
        self.path = Path(out_dir) / "metrics.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._mirror = None
        self._wandb = None
        if mirror == "tensorboard":
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise UserError(
                    "mirror=tensorboard needs the tensorboard package: pip install tensorboard"
                ) from None
            self._mirror = SummaryWriter(str(Path(out_dir) / "tensorboard"))
        elif mirror == "wandb":
            try:
                import wandb
            except ImportError:
                raise UserError("mirror=wandb needs the wandb package: pip install wandb") from None
            self._wandb = wandb.init(
                project=os.environ.get("WANDB_PROJECT", "mathrl"),
                name=run_name or Path(out_dir).name,
                config=config,
                dir=str(out_dir),
                resume="allow",
            )
        elif mirror not in MIRRORS:
            raise UserError(f"mirror must be one of {', '.join(MIRRORS)}, got {mirror!r}")

    def log(self, values: dict, step: int | None = None) -> None:
        line = {"time": round(time.time(), 3), **({"step": step} if step is not None else {}), **values}
        with writing(self.path), self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(line, allow_nan=False, default=_finite) + "\n")
        numbers = {
            k: v
            for k, v in values.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
        }
        if self._mirror is not None:
            for key, value in numbers.items():
                self._mirror.add_scalar(key, value, step or 0)
            self._mirror.flush()
        if self._wandb is not None:
            self._wandb.log(numbers, step=step)

    def drop_after(self, step: int) -> None:
        """Forget lines logged after ``step`` (a resumed run logs those steps again)."""
        if not self.path.is_file():
            return
        kept = []
        for line in self.path.read_text(encoding="utf-8").splitlines(keepends=True):
            if not line.endswith("\n"):
                continue  # torn by a kill
            if json.loads(line).get("step", -1) <= step:
                kept.append(line)
        write_atomic(self.path, "".join(kept))

    def close(self) -> None:
        if self._mirror is not None:
            self._mirror.close()
        if self._wandb is not None:
            self._wandb.finish()


def _finite(value):
    raise TypeError(f"cannot log {type(value).__name__}")


def read_metrics(run_dir: str | Path) -> list[dict]:
    """Every complete line of a run's ``metrics.jsonl``."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    return [
        json.loads(line)
        for line in path.read_text(encoding="utf-8").splitlines(keepends=True)
        if line.endswith("\n") and line.strip()
    ]


class NullSink:
    """The sink of a rank other than 0 under torchrun: metrics are written once, by rank 0."""

    def log(self, values: dict, step: int | None = None) -> None:
        pass

    def drop_after(self, step: int) -> None:
        pass

    def close(self) -> None:
        pass
