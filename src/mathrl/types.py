"""The frozen records that cross stage boundaries.

Problem -> (prompt) -> Completion -> Graded -> Group -> batch tensors. Each stage takes and
returns these records; tensors are built only at the update step. Lists inside records are
per-token (``_T``) or per-sample (``_G``) sequences.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True)
class Problem:
    """One math problem, whatever benchmark or generator it came from.

    ``answer`` is the gold final answer as a string (graders normalise it); ``level`` is the
    MATH-style difficulty 1-5 where the source has one. ``solution`` is a reference solution,
    for arith a full ``<think>...</think> \\boxed{}`` trace. ``tolerance`` is the absolute
    numeric tolerance a benchmark allows for this answer (OlympiadBench's ``error``), if any.
    """

    id: str
    problem: str
    answer: str
    level: int | None = None
    subject: str | None = None
    source: str = ""
    solution: str | None = None
    tolerance: float | None = None


FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class Completion:
    """One sampled continuation of one prompt.

    ``token_ids`` and ``logprobs`` are aligned, one entry per generated token (the stop token
    included when the model emitted one); ``logprobs`` are under the distribution the token was
    sampled from, so a trainer can form importance ratios against them. A remote server may
    return no ids; ``n_tokens`` then comes from what it did return (logprobs or usage).
    """

    token_ids: tuple[int, ...]
    logprobs: tuple[float, ...]
    text: str
    finish_reason: FinishReason
    n_thinking_tokens: int = 0
    prompt_n_tokens: int = 0
    n_tokens: int = -1  # -1: len(token_ids)

    def __post_init__(self):
        if self.n_tokens < 0:
            object.__setattr__(self, "n_tokens", len(self.token_ids))


@dataclass(frozen=True)
class Graded:
    """A completion judged by the one grader: the extracted answer, whether it is correct, the
    reward's parts by name (``correct``, ``format``, ``efficiency``) and their weighted sum, and
    whether the comparison ran out of time (then ``correct`` is False, and counted apart)."""

    extracted: str | None
    correct: bool
    reward_parts: dict[str, float] = field(default_factory=dict)
    reward: float = 0.0
    timed_out: bool = False


@dataclass(frozen=True)
class Group:
    """The G completions of one problem, their grades and their group-relative advantages."""

    problem: Problem
    completions: tuple[Completion, ...]
    graded: tuple[Graded, ...]
    advantages: tuple[float, ...]

    @property
    def rewards(self) -> tuple[float, ...]:
        return tuple(g.reward for g in self.graded)
