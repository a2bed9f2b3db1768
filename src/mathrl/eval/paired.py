"""Paired significance between two runs evaluated on the same problems (for ``mathrl report``).

AIME's 30 problems give a ±15-point interval per run, so most differences in such a column are
noise; comparing the same problems pairwise is far more sensitive than comparing two intervals.
With one sample per problem the exact McNemar test applies; with n > 1 samples per problem, a
paired bootstrap over problems. Holm's step-down correction controls the family-wise error
across a whole table of comparisons.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value from the discordant pairs.

    ``only_a``: problems run A gets right and run B wrong; ``only_b`` the reverse. Under the null
    each discordant pair goes either way with probability 1/2.

    >>> mcnemar_exact(1, 9)  # 2 * P(Bin(10, 1/2) <= 1) = 2 * 11/1024
    0.021484375
    """
    n = only_a + only_b
    if n == 0:
        return 1.0
    k = min(only_a, only_b)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def paired_bootstrap(
    acc_a: Sequence[float], acc_b: Sequence[float], resamples: int = 10_000, seed: int = 0
) -> tuple[float, tuple[float, float], float]:
    """Mean paired difference B - A over problems, its 95% percentile interval, and a two-sided
    p-value (twice the smaller share of resampled means on either side of 0).

    ``acc_a[i]``, ``acc_b[i]``: each run's accuracy on problem i (the mean over its n samples).
    """
    if len(acc_a) != len(acc_b) or not acc_a:
        raise ValueError("paired_bootstrap needs two equally long, non-empty lists")
    diffs = np.asarray(acc_b, dtype=float) - np.asarray(acc_a, dtype=float)
    rng = np.random.default_rng(seed)
    index = rng.integers(0, len(diffs), size=(resamples, len(diffs)))
    means = diffs[index].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    if np.all(diffs == 0):
        return 0.0, (0.0, 0.0), 1.0
    p = 2 * min(float(np.mean(means <= 0)), float(np.mean(means >= 0)))
    return float(diffs.mean()), (float(low), float(high)), min(1.0, p)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values, in the input order; reject where adjusted <= alpha.

    >>> holm([0.01, 0.04, 0.03])
    [0.03, 0.06, 0.06]
    """
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted
