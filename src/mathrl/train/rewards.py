"""Rewards for RL, composable with weights, all judged by the one grader.

- ``correct``: 1 if the final answer equals the gold answer, else 0 (the studies' reward).
- ``format``: 1 if the response finished on its own (stop, not truncation) and has a final
  ``\\boxed{}`` after its thinking block, else 0.
- ``efficiency``: ``best_so_far / num_tokens`` for a correct answer, 0 otherwise, where
  ``best_so_far`` is the fewest tokens of any correct answer seen for that problem, this
  group included (so the shortest correct answer so far scores 1 and the reward never exceeds
  1). The record lives in :class:`EfficiencyState`, saved with every checkpoint.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mathrl.fileio import write_atomic
from mathrl.grading import answers_match, extract_answer, last_boxed, strip_thinking
from mathrl.types import Completion, Graded, Problem

REWARD_NAMES = ("correct", "format", "efficiency")


def format_reward(completion: Completion) -> float:
    if completion.finish_reason != "stop":
        return 0.0
    return 1.0 if last_boxed(strip_thinking(completion.text)) is not None else 0.0


def efficiency_reward(correct: bool, n_tokens: int, best_so_far: int | None) -> float:
    """``best_so_far / n_tokens`` if correct, else 0.

    >>> efficiency_reward(True, 40, 30), efficiency_reward(False, 10, 30)
    (0.75, 0.0)
    """
    if not correct or not best_so_far or n_tokens <= 0:
        return 0.0
    return best_so_far / n_tokens


@dataclass
class EfficiencyState:
    """Fewest tokens of a correct answer seen per problem id."""

    best: dict[str, int] = field(default_factory=dict)

    def update(self, problem_id: str, correct_lengths: Sequence[int]) -> int | None:
        if correct_lengths:
            shortest = min(correct_lengths)
            self.best[problem_id] = min(shortest, self.best.get(problem_id, shortest))
        return self.best.get(problem_id)

    def save(self, path: Path) -> None:
        write_atomic(path, json.dumps(self.best, sort_keys=True) + "\n")


def grade_group(
    problem: Problem,
    completions: Sequence[Completion],
    extract: str,
    weights: Mapping[str, float],
    efficiency: EfficiencyState | None = None,
) -> tuple[Graded, ...]:
    """Grade a group and compute each completion's weighted reward."""
    extracted = [extract_answer(c.text, extract) for c in completions]
    correct = [answers_match(x, problem.answer, problem.tolerance) for x in extracted]
    best = None
    if weights.get("efficiency") and efficiency is not None:
        best = efficiency.update(
            problem.id,
            [
                c.n_tokens
                for c, ok in zip(completions, correct, strict=True)
                if ok and c.finish_reason == "stop"
            ],
        )
    graded = []
    for c, x, ok in zip(completions, extracted, correct, strict=True):
        parts = {"correct": float(ok)}
        if "format" in weights:
            parts["format"] = format_reward(c)
        if "efficiency" in weights:
            parts["efficiency"] = efficiency_reward(ok and c.finish_reason == "stop", c.n_tokens, best)
        graded.append(Graded(x, ok, parts, sum(weights.get(k, 0.0) * v for k, v in parts.items())))
    return tuple(graded)
