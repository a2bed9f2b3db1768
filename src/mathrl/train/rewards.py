"""Rewards for RL as a registry, composed with weights, all judged by the one grader.

A reward scores the completions of one problem, given their grades::

    @register_reward("length_penalty")
    class LengthPenalty:
        def score(self, problem, completions, graded):
            return [-c.n_tokens / 1000 for c in completions]

and a recipe names it with a weight (``rewards: {correct: 1.0, length_penalty: 0.5}``). A
reward with a state that must survive a resume (the efficiency reward's record) also has
``state_dict()`` / ``load_state_dict(state)``, and ``state_file`` if the run folder should hold
a readable copy; :class:`RewardSet` saves and restores them with every checkpoint, so the loop
never touches them. Under torchrun every rank scores the whole batch from the same (gathered)
grades, so every rank's state is the same and needs no merging.

Built in:

- ``correct``: 1 if the final answer equals the gold answer, else 0 (the studies' reward).
- ``format``: 1 if the response finished on its own (stop, not truncation) and has a final
  ``\\boxed{}`` after its thinking block, else 0.
- ``efficiency``: ``best_so_far / num_tokens`` for a correct, finished answer, 0 otherwise, where
  ``best_so_far`` is the fewest tokens of any correct finished answer seen for that problem, this
  group included (so the shortest correct answer so far scores 1 and the reward never exceeds 1).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

from mathrl.fileio import write_atomic
from mathrl.grading import last_boxed, strip_thinking
from mathrl.types import Completion, Graded, Group, Problem


class Reward(Protocol):
    def score(self, problem: Problem, completions: Sequence[Completion],
              graded: Sequence[Graded]) -> list[float]:
        """One value per completion of ``problem`` (``graded``: the grader's verdicts)."""
        ...


REWARDS: dict[str, Callable[[], Reward]] = {}


def register_reward(name: str):
    """Add a reward to the registry (a decorator on a class or a factory)."""
    def add(factory):
        REWARDS[name] = factory
        return factory
    return add


@register_reward("correct")
class Correct:
    def score(self, problem, completions, graded):
        return [float(g.correct) for g in graded]


def format_reward(completion: Completion) -> float:
    if completion.finish_reason != "stop":
        return 0.0
    return 1.0 if last_boxed(strip_thinking(completion.text)) is not None else 0.0


@register_reward("format")
class Format:
    def score(self, problem, completions, graded):
        return [format_reward(c) for c in completions]


def efficiency_reward(correct: bool, n_tokens: int, best_so_far: int | None) -> float:
    """``best_so_far / n_tokens`` if correct, else 0.

    >>> efficiency_reward(True, 40, 30), efficiency_reward(False, 10, 30)
    (0.75, 0.0)
    """
    if not correct or not best_so_far or n_tokens <= 0:
        return 0.0
    return best_so_far / n_tokens


@register_reward("efficiency")
@dataclass
class Efficiency:
    """The self-improving efficiency reward; ``best``: fewest tokens of a correct finished answer
    seen per problem id."""

    best: dict[str, int] = field(default_factory=dict)
    state_file = "efficiency_state.json"

    def score(self, problem, completions, graded):
        finished = [g.correct and c.finish_reason == "stop" for c, g in zip(completions, graded, strict=True)]
        lengths = [c.n_tokens for c, ok in zip(completions, finished, strict=True) if ok]
        if lengths:
            self.best[problem.id] = min(min(lengths), self.best.get(problem.id, min(lengths)))
        best = self.best.get(problem.id)
        return [efficiency_reward(ok, c.n_tokens, best) for c, ok in zip(completions, finished, strict=True)]

    def state_dict(self) -> dict:
        return dict(self.best)

    def load_state_dict(self, state: dict) -> None:
        self.best = {str(k): int(v) for k, v in state.items()}


class RewardSet:
    """The rewards a recipe names, with their weights: each completion's reward is the weighted
    sum of its parts (``correct`` is always a part, for the metrics, weighted or not)."""

    def __init__(self, weights: Mapping[str, float]):
        unknown = sorted(set(weights) - set(REWARDS))
        if unknown:
            raise ValueError(f"rewards: unknown {unknown}; registered: {', '.join(sorted(REWARDS))}")
        self.weights = dict(weights)
        self.rewards = {name: REWARDS[name]() for name in {"correct": 0.0, **self.weights}}

    def score(self, problem: Problem, completions: Sequence[Completion],
              graded: Sequence[Graded]) -> tuple[Graded, ...]:
        """``graded`` with each completion's reward parts and weighted reward filled in."""
        parts = {name: reward.score(problem, completions, graded) for name, reward in self.rewards.items()}
        weighted = [sum(self.weights.get(name, 0.0) * values[i] for name, values in parts.items())
                    for i in range(len(graded))]
        return tuple(replace(g, reward_parts={name: values[i] for name, values in parts.items()},
                             reward=weighted[i]) for i, g in enumerate(graded))

    def groups(self, problems: Sequence[Problem], completions_P: Sequence[Sequence[Completion]],
               graded_P: Sequence[Sequence[Graded]], advantages) -> list[Group]:
        """Score each problem's completions and attach their advantages (``advantages(rewards_G)``)."""
        out = []
        for problem, completions, graded in zip(problems, completions_P, graded_P, strict=True):
            scored = self.score(problem, completions, graded)
            advantages_G = tuple(advantages([g.reward for g in scored]))
            out.append(Group(problem, tuple(completions), scored, advantages_G))
        return out

    def state_dict(self) -> dict:
        return {name: r.state_dict() for name, r in self.rewards.items() if hasattr(r, "state_dict")}

    def load_state_dict(self, state: dict) -> None:
        for name, r in self.rewards.items():
            if name in state and hasattr(r, "load_state_dict"):
                r.load_state_dict(state[name])

    def write(self, out_dir: Path) -> None:
        """A readable copy of each stateful reward's state in the run folder."""
        for r in self.rewards.values():
            if getattr(r, "state_file", None):
                write_atomic(Path(out_dir) / r.state_file, json.dumps(r.state_dict(), sort_keys=True) + "\n")
