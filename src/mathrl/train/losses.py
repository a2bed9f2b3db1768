"""Losses as a registry: name -> a pure function ``(logp_B_T, LossInputs) -> (loss_B_T, diagnostics)``.

A loss returns the per-token loss and a dict of per-token diagnostics (``clip_fraction`` as 0/1,
say); the learner multiplies the loss by the datums' weights and sums it over every position
and datum (Tinker's convention: no normalisation in the loss; the weights carry it), and
reports each diagnostic as its mean over the loss tokens. Adding a loss is one function and one
decorator line (``docs/extending.md``)::

    @register_loss("my_loss", defaults={"scale": 1.0})
    def my_loss(logp_B_T, x):
        return -x.config["scale"] * logp_B_T * x.advantages_B_T, {}

The built-in losses have the semantics Tinker documents for the same names (``p`` the trainer's
probability of the target token, ``q`` the sampler's, ``A`` the advantage, ``rho = p / q``):

- ``cross_entropy``: ``-log p`` (times the weight: SFT).
- ``importance_sampling``: ``-rho A`` (the studies' loss).
- ``ppo``: ``-min(rho A, clip(rho, lo, hi) A)``; ``clip_low_threshold`` / ``clip_high_threshold``
  are bounds on the ratio itself (Tinker's defaults 0.8 / 1.2; unequal bounds are DAPO's
  clip-higher).
- ``cispo``: ``-sg(clip(rho, lo, hi)) A log p`` (MiniMax-M1): the clipped ratio is a constant
  weight, so no token's gradient is ever zeroed; defaults 0 / 4 (upper cap only).
- ``dro``: ``-(A log p - beta/2 (log p - log q)^2)`` (direct reward optimisation); ``beta`` has
  no documented default, so it must be given.

Options around any of them, chosen once when the :class:`Loss` is built:

- **KL to a frozen reference** (``kl_coef``), added per token. ``kl_estimator: k3`` adds
  ``k3 = exp(d) - d - 1``, ``d = log ref - log p``: its value estimates KL(policy || ref), but
  its gradient (on samples of the policy) is that of KL(ref || policy), the mass-covering
  direction. ``k3_is`` (the default) multiplies it by ``rho`` (with its gradient; TRL's
  ``use_bias_correction_kl``, DeepSeek-V3.2), whose gradient is that of KL(policy || ref), the
  regulariser RLHF objectives write and the one a KL coefficient is usually meant to be. Their
  values agree on policy.
- **Truncated importance sampling** (``tis_cap``; Yao et al. 2025) against sampler/trainer
  mismatch: the loss's ratio is taken against the trainer's own (pre-update) probabilities, and
  ``min(p_trainer / p_sampler, cap)``, per token or per sequence, multiplies the loss.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

import torch

TisLevel = Literal["token", "sequence"]
KLEstimator = Literal["k3", "k3_is"]
KL_ESTIMATORS = ("k3", "k3_is")


@dataclass(frozen=True)
class LossInputs:
    """What a loss reads, for one micro-batch, (B, T) in the datums' alignment. ``mask_B_T``:
    the positions in the loss (weight != 0); elsewhere values are 0 and ignored.
    ``segments_B_T``: which datum each position belongs to when several share a row (packing),
    else None (one datum per row)."""

    mask_B_T: torch.Tensor
    sampler_logp_B_T: torch.Tensor | None = None
    advantages_B_T: torch.Tensor | None = None
    ref_logp_B_T: torch.Tensor | None = None
    segments_B_T: torch.Tensor | None = None
    config: Mapping[str, float] = field(default_factory=dict)


LossFn = Callable[[torch.Tensor, LossInputs], tuple[torch.Tensor, dict[str, torch.Tensor]]]


@dataclass(frozen=True)
class LossDef:
    fn: LossFn
    needs: tuple[str, ...]  # datum fields it reads: "logprobs", "advantages"
    defaults: Mapping[str, float]
    required: tuple[str, ...]  # config keys without a default


LOSSES: dict[str, LossDef] = {}
ALIASES = {"ppo_clip": "ppo"}  # mathrl's earlier name


def register_loss(name: str, needs: tuple[str, ...] = ("logprobs", "advantages"),
                  defaults: Mapping[str, float] | None = None, required: tuple[str, ...] = ()):
    """Add a loss to the registry (a decorator); ``needs``: the datum fields it reads, checked
    before any computation; ``defaults``: its config keys and their values; ``required``: keys
    a caller must give."""
    def add(fn: LossFn) -> LossFn:
        LOSSES[name] = LossDef(fn, tuple(needs), dict(defaults or {}), tuple(required))
        return fn
    return add


@register_loss("cross_entropy", needs=())
def cross_entropy(logp_B_T: torch.Tensor, x: LossInputs):
    """``-log p`` per token; the datum's weights make it Tinker's ``-weights * logprobs``."""
    return -logp_B_T, {}


@register_loss("importance_sampling")
def importance_sampling(logp_B_T: torch.Tensor, x: LossInputs):
    """``-exp(log p - log q) A`` per token."""
    ratio_B_T = torch.exp(logp_B_T - x.sampler_logp_B_T)
    return -ratio_B_T * x.advantages_B_T, {}


@register_loss("ppo", defaults={"clip_low_threshold": 0.8, "clip_high_threshold": 1.2})
def ppo(logp_B_T: torch.Tensor, x: LossInputs):
    """``-min(rho A, clip(rho, lo, hi) A)`` per token; ``clip_fraction``: where the clipped
    term was the smaller (the token's gradient is zero)."""
    ratio_B_T = torch.exp(logp_B_T - x.sampler_logp_B_T)
    unclipped_B_T = ratio_B_T * x.advantages_B_T
    clipped_B_T = ratio_B_T.clamp(x.config["clip_low_threshold"], x.config["clip_high_threshold"]) \
        * x.advantages_B_T
    clipped_fraction_B_T = (clipped_B_T < unclipped_B_T).float()
    return -torch.minimum(unclipped_B_T, clipped_B_T), {"clip_fraction": clipped_fraction_B_T}


@register_loss("cispo", defaults={"clip_low_threshold": 0.0, "clip_high_threshold": 4.0})
def cispo(logp_B_T: torch.Tensor, x: LossInputs):
    """``-sg(clip(rho, lo, hi)) A log p`` per token; ``clip_fraction``: where rho left the range."""
    ratio_B_T = torch.exp(logp_B_T - x.sampler_logp_B_T).detach()
    low, high = x.config["clip_low_threshold"], x.config["clip_high_threshold"]
    outside_B_T = (ratio_B_T < low) | (ratio_B_T > high)
    return -(ratio_B_T.clamp(low, high) * x.advantages_B_T * logp_B_T), {"clip_fraction": outside_B_T.float()}


@register_loss("dro", required=("beta",))
def dro(logp_B_T: torch.Tensor, x: LossInputs):
    """``-(A log p - beta / 2 (log p - log q)^2)`` per token."""
    penalty_B_T = 0.5 * x.config["beta"] * (logp_B_T - x.sampler_logp_B_T) ** 2
    return -(logp_B_T * x.advantages_B_T - penalty_B_T), {}


def k3_kl(logp_B_T: torch.Tensor, ref_logp_B_T: torch.Tensor) -> torch.Tensor:
    """Per-token ``exp(d) - d - 1`` with ``d = ref - logp`` (>= 0). Its value estimates
    KL(policy || ref) on samples of the policy; as a loss its gradient is that of KL(ref || policy)
    (see the module docstring and :class:`Loss`'s ``k3_is``)."""
    d = ref_logp_B_T - logp_B_T
    return torch.expm1(d) - d  # = exp(d) - 1 - d, without the cancellation that makes it < 0 near d = 0


def segment_sums(values_B_T: torch.Tensor, segments_B_T: torch.Tensor | None) -> torch.Tensor:
    """Each position's sum over its datum: the row's sum (one datum per row), or, packed, the
    sum over positions with the same segment id."""
    if segments_B_T is None:
        return values_B_T.sum(-1, keepdim=True).expand_as(values_B_T)
    ids = segments_B_T.clamp(min=0).flatten()
    totals = values_B_T.new_zeros(int(ids.max()) + 1 if ids.numel() else 1)
    totals.index_add_(0, ids, values_B_T.flatten())
    return totals[ids].view_as(values_B_T)


def truncated_is_weights(
    trainer_logp_B_T: torch.Tensor, sampler_logp_B_T: torch.Tensor, mask_B_T: torch.Tensor,
    cap: float, level: TisLevel = "token", segments_B_T: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``min(p_trainer / p_sampler, cap)`` per token, or per sequence (the product over its loss
    tokens, the same for each of them), and where the cap applied. No gradient.

    >>> w, cut = truncated_is_weights(torch.tensor([[-1.0, -2.0]]), torch.tensor([[-1.5, -1.0]]),
    ...                               torch.tensor([[1, 1]]), cap=1.2)
    >>> [round(x, 4) for x in w[0].tolist()], cut.tolist()
    ([1.2, 0.3679], [[True, False]])
    """
    log_ratio_B_T = ((trainer_logp_B_T - sampler_logp_B_T) * mask_B_T).detach()
    if level == "sequence":
        log_ratio_B_T = segment_sums(log_ratio_B_T, segments_B_T)
    elif level != "token":
        raise ValueError(f"tis_level must be 'token' or 'sequence', got {level!r}")
    ratio_B_T = torch.exp(log_ratio_B_T)
    return ratio_B_T.clamp(max=cap), ratio_B_T > cap


@dataclass(frozen=True)
class Loss:
    """A registered loss with its config and options, checked and fixed once. Calling it gives
    ``(loss_B_T, diagnostics)``. ``entropy``: the learner also reports the policy's entropy
    over the loss tokens (RL)."""

    name: str = "importance_sampling"
    config: Mapping[str, float] = field(default_factory=dict)
    kl_coef: float = 0.0
    kl_estimator: KLEstimator = "k3_is"
    tis_cap: float | None = None
    tis_level: TisLevel = "token"
    entropy: bool = True

    def __post_init__(self):
        name = ALIASES.get(self.name, self.name)
        object.__setattr__(self, "name", name)
        if name not in LOSSES:
            raise ValueError(f"unknown loss {self.name!r}; registered: {', '.join(sorted(LOSSES))}")
        spec = LOSSES[name]
        known = set(spec.defaults) | set(spec.required)
        unknown = sorted(set(self.config) - known)
        if unknown:
            raise ValueError(f"loss {name}: unknown config {unknown}; it takes {sorted(known) or 'none'}")
        missing = [k for k in spec.required if k not in self.config]
        if missing:
            raise ValueError(f"loss {name} needs config {missing} (no default)")
        object.__setattr__(self, "config", {**spec.defaults, **{k: float(v) for k, v in self.config.items()}})
        if self.kl_estimator not in KL_ESTIMATORS:
            raise ValueError(f"kl_estimator must be one of {', '.join(KL_ESTIMATORS)}, "
                             f"got {self.kl_estimator!r}")
        if self.tis_level not in ("token", "sequence"):
            raise ValueError(f"tis_level must be 'token' or 'sequence', got {self.tis_level!r}")
        if self.tis_cap is not None and self.tis_cap <= 0:
            raise ValueError(f"tis_cap must be > 0, got {self.tis_cap}")
        if (self.tis_cap is not None or self.kl_estimator == "k3_is" and self.kl_coef) \
                and "logprobs" not in spec.needs:
            raise ValueError(f"loss {name} reads no sampler logprobs: tis_cap and kl_estimator k3_is "
                             "need them")

    @property
    def needs(self) -> tuple[str, ...]:
        """The datum fields every datum must carry."""
        return LOSSES[self.name].needs

    @property
    def needs_reference(self) -> bool:
        return self.kl_coef != 0

    def __call__(self, logp_B_T: torch.Tensor, x: LossInputs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x = replace(x, config=self.config)
        if self.tis_cap is None:
            return self._with_kl(logp_B_T, x)
        # The ratio against the trainer's own pre-update probabilities (1 in value, the policy
        # gradient in gradient); the sampler mismatch as a capped, constant weight.
        weight_B_T, truncated_B_T = truncated_is_weights(logp_B_T, x.sampler_logp_B_T, x.mask_B_T,
                                                         self.tis_cap, self.tis_level, x.segments_B_T)
        loss_B_T, diagnostics = self._with_kl(logp_B_T, replace(x, sampler_logp_B_T=logp_B_T.detach()))
        return loss_B_T * weight_B_T, {**diagnostics, "tis_truncated": truncated_B_T.float()}

    def _with_kl(self, logp_B_T: torch.Tensor, x: LossInputs):
        loss_B_T, diagnostics = LOSSES[self.name].fn(logp_B_T, x)
        if not self.kl_coef:
            return loss_B_T, diagnostics
        kl_B_T = k3_kl(logp_B_T, x.ref_logp_B_T)
        if self.kl_estimator == "k3_is":
            kl_B_T = kl_B_T * torch.exp(logp_B_T - x.sampler_logp_B_T)
        return loss_B_T + self.kl_coef * kl_B_T, {**diagnostics, "kl_reference": kl_B_T.detach()}
