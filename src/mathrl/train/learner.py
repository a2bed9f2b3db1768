"""The learner seam: what a training loop asks of whatever holds the weights.

A learner has the Tinker API's primitives (``forward_backward``, ``optim_step``,
``save_for_sampler``, ``save_state`` / ``load_state``), and everything a loss needs travels in
the :class:`Datum`. The SFT and GRPO loops are written against :class:`Learner` alone: the local
learner (:mod:`mathrl.train.local`: torch, LoRA or full, DDP/FSDP2 under torchrun) is one
implementation; a remote service is another. The loops never see a collective, a module or an
optimizer.

Alignment, as Tinker's: a datum's ``model_input`` is a token sequence of length N, and every
per-position field has length N too, position ``i`` describing the prediction made after
``model_input[i]``: ``target_tokens[i]`` is the token scored there (for a plain sequence
``s``, ``model_input = s[:-1]`` and ``target_tokens = s[1:]``), ``weights[i]`` its weight in the
loss, ``logprobs[i]`` the sampler's log-probability of it, ``advantages[i]`` its advantage.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from mathrl.sampling import Sampler
    from mathrl.train.losses import Loss
    from mathrl.train.rollouts import RolloutEngine


@dataclass(frozen=True)
class Datum:
    """One token sequence and its loss inputs, for SFT and RL alike (see the module docstring
    for the alignment). ``weights`` None: every position weighs 1 (Tinker's RL datums carry
    none; their prompt positions have advantage 0). A position of weight 0 is not computed."""

    model_input: tuple[int, ...]
    target_tokens: tuple[int, ...]
    weights: tuple[float, ...] | None = None
    logprobs: tuple[float, ...] | None = None  # the sampler's, of each target token
    advantages: tuple[float, ...] | None = None

    def __post_init__(self):
        n = len(self.model_input)
        if n == 0:
            raise ValueError("a datum needs at least one input token")
        for name in ("target_tokens", "weights", "logprobs", "advantages"):
            value = getattr(self, name)
            if value is not None and len(value) != n:
                raise ValueError(f"datum: {name} has {len(value)} entries for {n} input tokens")

    @classmethod
    def from_sequence(cls, tokens: Sequence[int], start: int, weight: float = 1.0,
                      logprobs: Sequence[float] | None = None, advantage: float | None = None) -> Datum:
        """The datum of ``tokens`` whose loss covers ``tokens[start:]`` (``start >= 1``: a first
        token is never predicted), each with ``weight``; ``logprobs`` (one per covered token)
        and a sequence-level ``advantage`` for RL.

        >>> d = Datum.from_sequence([5, 6, 7, 8], start=2, logprobs=[-0.1, -0.2], advantage=0.5)
        >>> d.model_input, d.target_tokens, d.weights, d.advantages
        ((5, 6, 7), (6, 7, 8), (0.0, 1.0, 1.0), (0.0, 0.5, 0.5))
        """
        if not 1 <= start < len(tokens):
            raise ValueError(f"datum: loss start {start} outside 1..{len(tokens) - 1}")
        tokens = tuple(tokens)
        pad = start - 1
        covered = len(tokens) - start
        return cls(
            tokens[:-1], tokens[1:], (0.0,) * pad + (float(weight),) * covered,
            None if logprobs is None else (0.0,) * pad + tuple(float(x) for x in logprobs),
            None if advantage is None else (0.0,) * pad + (float(advantage),) * covered,
        )

    @property
    def sequence(self) -> tuple[int, ...]:
        """The tokens the model reads: the input and the last target (for a shifted sequence,
        the whole sequence; an unshifted target elsewhere only changes what is scored)."""
        return self.model_input + self.target_tokens[-1:]

    @property
    def n_loss_tokens(self) -> int:
        return len(self.model_input) if self.weights is None else sum(w != 0 for w in self.weights)


@dataclass(frozen=True)
class AdamParams:
    """One optimizer step's settings (Tinker's ``AdamParams``; decoupled weight decay, as
    ``torch.optim.AdamW``). ``grad_clip_norm`` 0: no clipping (the global norm is still
    measured and reported)."""

    learning_rate: float
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.0
    grad_clip_norm: float = 0.0


@dataclass(frozen=True)
class PolicyRef:
    """Weights after ``version`` optimizer steps, as an engine loads them: ``path`` is the
    published folder (a LoRA adapter, or, full fine-tuning, the whole model's weights); None
    when the engine samples the trained module itself."""

    version: int
    path: Path | None = None
    kind: Literal["adapter", "weights"] = "adapter"


@dataclass(frozen=True)
class ForwardBackward:
    """What ``forward`` / ``forward_backward`` return: the learner's log-probability of every
    datum's target tokens (when asked for; 0 where a datum's weight is 0) and the call's metrics
    (``train/loss`` the weighted sum; per-token means over the loss tokens of every datum)."""

    metrics: dict[str, float]
    logprobs: list[tuple[float, ...]] | None = None
    elementwise_loss: list[tuple[float, ...]] | None = None  # weight x loss at each position


class Learner(Protocol):
    """The training side of a run (see the module docstring)."""

    tokenizer: object  # the policy's tokenizer (chat template, pad and stop ids)

    def forward(self, datums: Sequence[Datum], loss: Loss, return_logprobs: bool = True) -> ForwardBackward:
        """The loss and its diagnostics, without gradients."""
        ...

    def forward_backward(self, datums: Sequence[Datum], loss: Loss,
                         return_logprobs: bool = False) -> ForwardBackward:
        """Add the gradient of ``sum over datums and positions of weight x loss`` to the
        accumulated gradient (until the next ``optim_step``)."""
        ...

    def optim_step(self, adam: AdamParams) -> Mapping[str, float]:
        """One optimizer step on the accumulated gradient, which it then clears. A remote learner
        may return before the step is done (its metrics awaited when read): read the results of
        a step's calls after making them all."""
        ...

    def save_for_sampler(self, version: int) -> PolicyRef:
        """Publish the current weights for a sampling engine to load."""
        ...

    def save_state(self, folder: Path, extra: dict) -> None:
        """Everything an exact resume needs (weights, optimizer, RNG), plus ``extra``, into
        ``folder`` (written whole or not at all)."""
        ...

    def load_state(self, folder: Path) -> dict:
        """Restore :meth:`save_state`'s folder; returns its ``extra``."""
        ...

    def sampler(self, batch_size: int) -> Sampler:
        """A sampler of the current weights (evaluations)."""
        ...

    def rollouts(self, batch_size: int, dist) -> RolloutEngine:
        """The engine that samples the weights where they are trained (``rollout.engine:
        in_process``): the module in this process, or the service's sampling client."""
        ...

    def gathered(self):
        """A context in which this process holds the whole weights (sampling under FSDP)."""
        ...
