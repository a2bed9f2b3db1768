"""The RL math of ``mathrl grpo``: advantages, group filtering, losses, loss normalisation.

Small pure functions, each tested with hand-computed numbers. Deviations from GRPO as published
(Shao et al. 2024, DeepSeekMath), as the reference studies ran it:

1. Advantages are ``reward - group mean``; dividing by the group's standard deviation is
   optional and off by default (Dr. GRPO shows it biases toward easy/hard groups).
2. Groups whose rewards are all equal carry no signal and are dropped (counted, logged), not
   trained on with zero advantage.
3. One optimizer step per batch of rollouts, sampled with the current weights: the default loss
   is plain importance sampling, ``-exp(logp_train - logp_sampler) * A``, whose ratio only
   corrects numerical sampler/trainer mismatch. PPO clipping (with separate low/high epsilon,
   DAPO's clip-higher) is available for off-policy use.
4. No KL penalty to a reference model by default (``kl_coef: 0``); when on, it is the k3
   estimator, added per token.
5. Sampler and trainer compute the same policy with different kernels (an inference engine in
   bf16, the trainer's own forward), so their probabilities differ a little. Truncated importance
   sampling (``tis_cap``; Yao et al. 2025, "Your efficient RL framework secretly brings you
   off-policy RL training") corrects for it: the ratio is taken against the trainer's own
   (pre-update) probabilities, and the sampler-to-trainer ratio ``pi_trainer / pi_sampler``,
   per token or per sequence, multiplies the loss capped at ``tis_cap``. Off by default: with
   the in-process sampler the two are the same computation.
6. The loss is summed over tokens by default (the reference loop); token mean over the batch
   (DAPO), a constant length (Dr. GRPO) and the per-sequence mean (the paper) are options.
   The normalisation is a per-token weight fixed for the whole batch, so gradient accumulation
   over micro-batches gives exactly the full batch's gradient.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch

LossName = Literal["importance_sampling", "ppo_clip"]
TisLevel = Literal["token", "sequence"]
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


@dataclass(frozen=True)
class LossTerms:
    """Per-token loss (B, T) and diagnostics: where the ratio was clipped, the KL terms, and where
    the truncated importance weight was capped."""

    loss_B_T: torch.Tensor
    clipped_B_T: torch.Tensor
    kl_B_T: torch.Tensor | None = None
    truncated_B_T: torch.Tensor | None = None


def truncated_is_weights(
    trainer_logp_B_T: torch.Tensor, sampler_logp_B_T: torch.Tensor, mask_B_T: torch.Tensor,
    cap: float, level: TisLevel = "token",
) -> tuple[torch.Tensor, torch.Tensor]:
    """``min(pi_trainer / pi_sampler, cap)`` per token, or per sequence (the product over its
    completion tokens, the same for each of them), and where the cap applied. No gradient.

    >>> w, cut = truncated_is_weights(torch.tensor([[-1.0, -2.0]]), torch.tensor([[-1.5, -1.0]]),
    ...                               torch.tensor([[1, 1]]), cap=1.2)
    >>> [round(x, 4) for x in w[0].tolist()], cut.tolist()
    ([1.2, 0.3679], [[True, False]])
    """
    log_ratio_B_T = ((trainer_logp_B_T - sampler_logp_B_T) * mask_B_T).detach()
    if level == "sequence":
        log_ratio_B_T = log_ratio_B_T.sum(-1, keepdim=True).expand_as(log_ratio_B_T)
    elif level != "token":
        raise ValueError(f"tis_level must be 'token' or 'sequence', got {level!r}")
    ratio_B_T = torch.exp(log_ratio_B_T)
    return ratio_B_T.clamp(max=cap), ratio_B_T > cap


def importance_sampling_loss(
    logp_B_T: torch.Tensor, sampler_logp_B_T: torch.Tensor, advantage_B: torch.Tensor
) -> LossTerms:
    """``-exp(logp - sampler_logp) * A`` per token (the studies' loss)."""
    ratio_B_T = torch.exp(logp_B_T - sampler_logp_B_T)
    return LossTerms(-ratio_B_T * advantage_B[:, None], torch.zeros_like(ratio_B_T, dtype=torch.bool))


def ppo_clip_loss(
    logp_B_T: torch.Tensor,
    sampler_logp_B_T: torch.Tensor,
    advantage_B: torch.Tensor,
    clip_low: float = 0.2,
    clip_high: float = 0.28,
) -> LossTerms:
    """``-min(r A, clip(r, 1 - clip_low, 1 + clip_high) A)`` per token (PPO, with clip-higher)."""
    ratio_B_T = torch.exp(logp_B_T - sampler_logp_B_T)
    advantage_B_1 = advantage_B[:, None]
    unclipped = ratio_B_T * advantage_B_1
    clipped = ratio_B_T.clamp(1 - clip_low, 1 + clip_high) * advantage_B_1
    return LossTerms(-torch.minimum(unclipped, clipped), clipped < unclipped)


def k3_kl(logp_B_T: torch.Tensor, ref_logp_B_T: torch.Tensor) -> torch.Tensor:
    """Per-token KL(policy || reference) estimate ``exp(d) - d - 1`` with ``d = ref - logp`` (>= 0)."""
    d = ref_logp_B_T - logp_B_T
    return torch.expm1(d) - d  # = exp(d) - 1 - d, without the cancellation that makes it < 0 near d = 0


def make_loss(
    name: LossName, clip_low: float = 0.2, clip_high: float = 0.28, kl_coef: float = 0.0,
    tis_cap: float | None = None, tis_level: TisLevel = "token",
) -> Callable[..., LossTerms]:
    """The per-token loss, chosen once: ``loss(logp, sampler_logp, advantage, ref_logp=None,
    mask=None)`` (``mask``, the completion tokens, is needed for sequence-level TIS)."""
    if tis_cap is not None:
        inner = make_loss(name, clip_low, clip_high, kl_coef)

        def with_tis(logp, sampler, adv, ref_logp=None, mask=None):
            # The ratio against the trainer's own pre-update probabilities (1 in value, the
            # policy gradient in gradient); the sampler mismatch as a capped, constant weight.
            weight_B_T, truncated_B_T = truncated_is_weights(
                logp, sampler, torch.ones_like(logp) if mask is None else mask, tis_cap, tis_level)
            terms = inner(logp, logp.detach(), adv, ref_logp)
            return LossTerms(terms.loss_B_T * weight_B_T, terms.clipped_B_T, terms.kl_B_T, truncated_B_T)

        return with_tis
    if name == "importance_sampling":

        def base(logp, old, adv):
            return importance_sampling_loss(logp, old, adv)
    elif name == "ppo_clip":

        def base(logp, old, adv):
            return ppo_clip_loss(logp, old, adv, clip_low, clip_high)
    else:
        raise ValueError(f"unknown loss {name!r}")
    if kl_coef == 0:
        return lambda logp, old, adv, ref_logp=None, mask=None: base(logp, old, adv)

    def with_kl(logp, old, adv, ref_logp=None, mask=None):
        terms = base(logp, old, adv)
        kl = k3_kl(logp, ref_logp)
        return LossTerms(terms.loss_B_T + kl_coef * kl, terms.clipped_B_T, kl)

    return with_kl
