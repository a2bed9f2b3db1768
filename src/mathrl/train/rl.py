"""The RL math of ``mathrl grpo``: advantages, group filtering, loss normalisation, datums.

Small pure functions, each tested with hand-computed numbers. Deviations from GRPO as published
(Shao et al. 2024, DeepSeekMath), as the reference studies ran it:

1. Advantages are ``reward - group mean``; dividing by the group's standard deviation is
   optional and off by default (Dr. GRPO shows it biases toward easy/hard groups).
2. Groups whose rewards are all equal carry no signal and are dropped (counted, logged), not
   trained on with zero advantage.
3. One optimizer step per batch of rollouts by default, sampled with the current weights: the
   default loss is plain importance sampling, ``-exp(logp_train - logp_sampler) * A``, whose
   ratio only corrects numerical sampler/trainer mismatch. ``num_substeps: k`` splits the batch's
   groups into k parts with an optimizer step each (the cookbook's substeps), and PPO clipping
   (with separate low/high thresholds, DAPO's clip-higher) or CISPO then matter. The losses are
   in :mod:`mathrl.train.losses`.
4. No KL penalty to a reference model by default (``kl_coef: 0``); when on, it is the k3
   estimator times the ratio, added per token (:mod:`mathrl.train.losses` says why).
5. Sampler and trainer compute the same policy with different kernels (an inference engine in
   bf16, the trainer's own forward), so their probabilities differ a little. Truncated importance
   sampling (``tis_cap``; Yao et al. 2025, "Your efficient RL framework secretly brings you
   off-policy RL training") corrects for it. Off by default: with the in-process sampler the
   two are the same computation.
6. The loss is summed over tokens by default (the reference loop); token mean over the batch
   (DAPO), a constant length (Dr. GRPO) and the per-sequence mean (the paper) are options.
   The normalisation is a per-token weight fixed for the whole batch (the datums' ``weights``),
   so gradient accumulation over micro-batches gives exactly the full batch's gradient.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Literal

from mathrl.train.learner import Datum
from mathrl.types import Group

Normalization = Literal["token_sum", "token_mean", "constant", "sequence_mean"]


def group_advantages(
    rewards_G: Sequence[float], scale_by_std: bool = False, eps: float = 1e-6
) -> list[float]:
    """``reward - mean`` of the group, optionally divided by the group's (population) std.

    >>> group_advantages([1.0, 0.0, 0.0, 1.0])
    [0.5, -0.5, -0.5, 0.5]
    """
    mean = sum(rewards_G) / len(rewards_G)
    centred = [r - mean for r in rewards_G]
    if not scale_by_std:
        return centred
    std = math.sqrt(sum(c * c for c in centred) / len(centred))
    return [c / (std + eps) for c in centred]


def is_constant(rewards_G: Sequence[float], tol: float = 1e-9) -> bool:
    return max(rewards_G) - min(rewards_G) <= tol


def group_outcome(correct_G: Sequence[bool]) -> str:
    """``all_correct``, ``all_wrong`` or ``mixed``: how informative a group is for correctness."""
    if all(correct_G):
        return "all_correct"
    return "all_wrong" if not any(correct_G) else "mixed"


def token_weight(
    length: int, n_sequences: int, total_tokens: int, max_tokens: int, normalization: Normalization
) -> float:
    """Weight of each loss token of a sequence of ``length`` tokens in a batch of ``n_sequences``
    sequences holding ``total_tokens`` loss tokens.

    >>> token_weight(10, 4, 100, 50, "token_mean"), token_weight(10, 4, 100, 50, "sequence_mean")
    (0.01, 0.025)
    """
    if normalization == "token_sum":
        return 1.0
    if normalization == "token_mean":
        return 1.0 / total_tokens
    if normalization == "constant":
        return 1.0 / (n_sequences * max_tokens)
    if normalization == "sequence_mean":
        return 1.0 / (n_sequences * length)
    raise ValueError(f"unknown normalization {normalization!r}")


def rl_datums(groups: Sequence[Group], prompt_ids: dict[str, Sequence[int]], normalization: Normalization,
              max_tokens: int) -> list[Datum]:
    """One datum per non-empty completion of ``groups``: prompt + completion, the loss on the
    completion tokens with their sampler logprobs and the completion's advantage, each token
    weighted per ``normalization`` over these groups' sequences and tokens."""
    rows = [(prompt_ids[g.problem.id], c, a) for g in groups
            for c, a in zip(g.completions, g.advantages, strict=True) if c.n_tokens]
    total_tokens = sum(len(c.token_ids) for _, c, _ in rows)
    def weight(c) -> float:
        return token_weight(len(c.token_ids), len(rows), total_tokens, max_tokens, normalization)

    return [Datum.from_sequence(tuple(prompt) + c.token_ids, len(prompt), weight(c), c.logprobs, a)
            for prompt, c, a in rows]


def split_groups(groups: Sequence[Group], parts: int) -> list[list[Group]]:
    """``groups`` in ``parts`` contiguous runs of whole groups (sizes differ by at most one; no
    empty run): each is one optimizer substep, as the cookbook's ``num_substeps``.

    >>> [len(p) for p in split_groups(list(range(7)), 3)]
    [3, 2, 2]
    """
    parts = max(1, min(parts, len(groups)))
    base, extra = divmod(len(groups), parts)
    out, start = [], 0
    for i in range(parts):
        size = base + (i < extra)
        out.append(list(groups[start:start + size]))
        start += size
    return out


SUMMED = ("train/loss", "train/sequences", "train/tokens", "train/micro_batches", "time/service_wait_s")


def merge_updates(updates: Sequence[dict]) -> dict:
    """One step's metrics from its substeps' (counts and the loss summed, the rest averaged)."""
    if len(updates) <= 1:
        return dict(updates[0]) if updates else {}
    keys = {k for u in updates for k in u}
    return {k: (sum if k in SUMMED else statistics.fmean)([u[k] for u in updates if k in u])
            for k in sorted(keys)}


def step_metrics(groups: Sequence[Group], n_kept: int, update: dict, lr: float,
                 times: dict[str, float]) -> dict:
    """A GRPO step's metrics; ``times``: seconds by phase (``time/<phase>`` in the metrics)."""
    completions = [c for g in groups for c in g.completions]
    tokens = [c.n_tokens for c in completions]
    graded = [x for g in groups for x in g.graded]
    outcomes = [group_outcome([x.correct for x in g.graded]) for g in groups]
    metrics = {
        "reward/mean": statistics.fmean(r for g in groups for r in g.rewards),
        "reward/correct": statistics.fmean(x.correct for x in graded),
        "groups/all_correct": outcomes.count("all_correct") / len(groups),
        "groups/all_wrong": outcomes.count("all_wrong") / len(groups),
        "groups/mixed": outcomes.count("mixed") / len(groups),
        "groups/skipped_constant": len(groups) - n_kept,
        "grading/timeouts": sum(x.timed_out for x in graded),  # counted as wrong, and here
        "tokens/mean": statistics.fmean(tokens),
        "tokens/max": max(tokens),
        "tokens/thinking_mean": statistics.fmean(c.n_thinking_tokens for c in completions),
        "tokens/truncated": sum(c.finish_reason == "length" for c in completions) / len(completions),
        "train/lr": lr,
        **update,
        **{f"time/{phase}": seconds for phase, seconds in times.items()},
    }
    for name in groups[0].graded[0].reward_parts:
        metrics[f"reward/{name}"] = statistics.fmean(x.reward_parts[name] for x in graded)
    return {k: (v if not isinstance(v, float) or math.isfinite(v) else None) for k, v in metrics.items()}
