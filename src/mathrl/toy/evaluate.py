"""Greedy accuracy of a model on the arith test split: the number the README quotes for ``tiny``."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from mathrl.grading import grade
from mathrl.prompts import PromptProtocol
from mathrl.sampling import Sampler, SamplingParams
from mathrl.types import Completion, Problem

EVAL_MAX_TOKENS = 256


def greedy_completions(sampler: Sampler, problems: Sequence[Problem],
                       max_tokens: int = EVAL_MAX_TOKENS) -> list[Completion]:
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens)
    return [c[0] for c in sampler.sample([PromptProtocol().messages(p) for p in problems], 1, params)]


def accuracy_report(problems: Sequence[Problem], completions: Sequence[Completion]) -> dict:
    """Greedy accuracy overall and per level, graded by the one grader."""
    by_level: dict[int, list[bool]] = defaultdict(list)
    for problem, completion in zip(problems, completions, strict=True):
        by_level[problem.level].append(grade(completion.text, problem.answer))
    correct = sum(sum(v) for v in by_level.values())
    return {
        "accuracy": correct / len(problems),
        "correct": correct,
        "n": len(problems),
        "per_level": {str(lv): sum(v) / len(v) for lv, v in sorted(by_level.items())},
        "mean_tokens": sum(c.n_tokens for c in completions) / len(completions),
    }


def arith_accuracy(sampler: Sampler, problems: Sequence[Problem], max_tokens: int = EVAL_MAX_TOKENS) -> dict:
    return accuracy_report(problems, greedy_completions(sampler, problems, max_tokens))
