"""Learning-rate schedules as one pure function of the step."""

from __future__ import annotations

import math
from typing import Literal

Schedule = Literal["linear", "cosine", "constant"]


def lr_multiplier(
    step: int, total_steps: int, schedule: Schedule = "linear", warmup_steps: int = 0, min_ratio: float = 0.0
) -> float:
    """Factor on the base learning rate for optimizer step ``step`` (0-based) of ``total_steps``.

    Linear warmup over ``warmup_steps``, then ``linear`` decay to ``min_ratio`` at the last step
    (the studies' "linear decay to 0"), ``cosine`` decay to ``min_ratio``, or ``constant``.

    >>> [round(lr_multiplier(s, 4), 3) for s in range(4)]
    [1.0, 0.75, 0.5, 0.25]
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    if schedule == "linear":
        shape = 1.0 - progress
    elif schedule == "cosine":
        shape = 0.5 * (1.0 + math.cos(math.pi * progress))
    else:
        raise ValueError(f"unknown schedule {schedule!r}")
    return min_ratio + (1.0 - min_ratio) * shape
