"""Evaluation statistics as small pure functions, each checkable with a handful of numbers."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence

Z95 = 1.959963984540054


def normal_interval(correct: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Accuracy and the half-width of its normal-approximation interval (what the studies report).

    >>> normal_interval(80, 100)
    (0.8, 0.0783...)
    """
    if n == 0:
        return 0.0, 0.0
    p = correct / n
    return p, z * math.sqrt(p * (1 - p) / n)


def wilson_interval(correct: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval (lo, hi): sane at 0% and 100%, where the normal one collapses."""
    if n == 0:
        return 0.0, 1.0
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct: 1 - C(n-c, k) / C(n, k) (Chen et al. 2021).

    >>> pass_at_k(10, 0, 1), pass_at_k(10, 10, 1), round(pass_at_k(10, 3, 2), 4)
    (0.0, 1.0, 0.5333)
    """
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples, got {n}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def majority_correct(answer_keys: Sequence[str | None], correct: Sequence[bool], k: int) -> bool:
    """maj@k for one problem: is the most common answer among the first k samples correct?

    Answers are compared by ``answer_keys`` (normalised extracted answers); samples without an
    answer do not vote; ties go to the answer seen first.
    """
    votes = Counter(key for key in answer_keys[:k] if key is not None)
    if not votes:
        return False
    top = max(votes.values())
    winner = next(key for key in answer_keys[:k] if key is not None and votes[key] == top)
    return next(ok for key, ok in zip(answer_keys[:k], correct[:k], strict=True) if key == winner)


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolation percentile (numpy's default), 0 <= q <= 100."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(rank), math.ceil(rank)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (rank - lo)


def efficiency(accuracy: float, mean_tokens: float) -> float:
    """The efficiency study's figure: accuracy in percent per mean generated token."""
    return 100 * accuracy / mean_tokens if mean_tokens else 0.0


def closed_thinking_tokens(text: str, count_tokens: Callable[[str], int]) -> int:
    """Tokens of the text strictly inside ``<think>...</think>`` when the thought was closed, 0
    when it was not (cut off by the token limit) or there is none: the thinking-token count of
    the efficiency study, beside mathrl's own (which counts an unfinished thought in full).

    >>> closed_thinking_tokens("<think>a b c</think> x", lambda t: len(t.split()))
    3
    """
    start = text.find("<think>")
    end = text.find("</think>", start + 1) if start >= 0 else -1
    return count_tokens(text[start + len("<think>"):end]) if end >= 0 else 0


def summarize(groups: Sequence[Sequence[dict]], ks: Sequence[int] | None = None) -> dict:
    """All metrics of one benchmark from its graded samples, grouped by problem (n each).

    Each sample dict has ``correct``, ``answer_key``, ``n_tokens``, ``n_thinking_tokens`` and
    ``finish_reason``. Accuracy is the mean over all samples (= mean per-problem accuracy,
    since every problem has n samples).
    """
    samples = [s for g in groups for s in g]
    n = len(groups[0]) if groups else 0
    correct = sum(s["correct"] for s in samples)
    accuracy, half = normal_interval(correct, len(samples))
    lo, hi = wilson_interval(correct, len(samples))
    tokens = [s["n_tokens"] for s in samples]
    thinking = [s["n_thinking_tokens"] for s in samples]
    mean_tokens = sum(tokens) / len(tokens) if tokens else 0.0
    ks = [k for k in (ks or _powers_of_two(n)) if k <= n]
    return {
        "problems": len(groups),
        "samples": len(samples),
        "n": n,
        "accuracy": accuracy,
        "ci95_normal": half,
        "ci95_wilson": [lo, hi],
        "pass_at_k": {str(k): sum(pass_at_k(n, sum(s["correct"] for s in g), k) for g in groups) / len(groups)
                      for k in ks} if groups else {},
        "maj_at_k": {str(k): sum(majority_correct([s["answer_key"] for s in g], [s["correct"] for s in g], k)
                                 for g in groups) / len(groups) for k in ks} if groups else {},
        "mean_tokens": mean_tokens,
        "median_tokens": percentile(tokens, 50),
        "p90_tokens": percentile(tokens, 90),
        "mean_thinking_tokens": sum(thinking) / len(thinking) if thinking else 0.0,
        # Study 2's count: the text of a closed thought re-tokenised; an unfinished one counts 0.
        "mean_thinking_tokens_closed": (
            sum(s["n_thinking_tokens_closed"] for s in samples) / len(samples)
            if samples and all(s.get("n_thinking_tokens_closed") is not None for s in samples) else None),
        "thinking_share": sum(thinking) / sum(tokens) if sum(tokens) else 0.0,
        "efficiency": efficiency(accuracy, mean_tokens),
        "truncation_rate": (sum(s["finish_reason"] == "length" for s in samples) / len(samples)
                            if samples else 0.0),
        # Answers whose comparison ran out of time: scored wrong, and counted here apart.
        "grading_timeouts": sum(bool(s.get("timed_out")) for s in samples),
    }


def _powers_of_two(n: int) -> list[int]:
    ks, k = [], 1
    while k <= n:
        ks.append(k)
        k *= 2
    if n and ks[-1] != n:
        ks.append(n)
    return ks
