"""Gold answers checked before anything is graded against them.

A gold the grader cannot match is the quietest failure an RL run has: every sample of its
problem scores 0 (or 1), the group has no variance, and the run trains on the rest without a word (an
eval counts the problem wrong for every model). So each gold is graded against itself as a model
would write it (``The final answer is $\\boxed{GOLD}$.``, or ``#### GOLD`` for GSM8K-style
extraction), through the one grader, and a gold that fails is reported with its reason:

- ``empty``: nothing left once normalised (``\\boxed{}``, ``\\text{ }``);
- ``unbalanced braces``: a box around it would close early, so no response can carry it whole;
- ``not equal to itself``: written as a model would, it is extracted or compared as something
  else (the extracted text is given);
- ``timed out``: comparing it with itself ran past the grader's bound;
- ``equal to any answer``: both ``0`` and ``1`` grade as correct against it (an always-1 reward).

``mathrl data check NAME|FILE`` lists them; :func:`mathrl.data.load_dataset` skips and counts
them (eval, GRPO, distillation and rejection sampling load through it).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from mathrl.grading.equivalence import DEFAULT_TIMEOUT_S
from mathrl.grading.grader import GradeRequest, grade_one
from mathrl.grading.normalize import normalize
from mathrl.types import Problem

# Two different answers: a gold equal to both is equal to anything (an always-1 reward).
NOT_ONE_ANSWER = ("0", "1")


@dataclass(frozen=True)
class BadGold:
    """A problem whose gold answer no response could match, and why."""

    id: str
    answer: str
    reason: str


def as_written(gold: str, extract: str) -> str:
    """``gold`` in a response as a model following the dataset's prompt writes it."""
    if extract == "gsm8k":
        return f"Adding it up gives the total.\n#### {gold}"
    return f"So the final answer is $\\boxed{{{gold}}}$."


def gold_problem(problem: Problem, extract: str, timeout: float = DEFAULT_TIMEOUT_S) -> str | None:
    """Why ``problem``'s gold cannot be matched, or None when it grades equal to itself."""
    gold = problem.answer
    if not normalize(gold).strip():
        return "empty: nothing is left once normalised"
    opened, closed = gold.count("{"), gold.count("}")
    if opened != closed:
        return f"unbalanced braces ({opened} opened, {closed} closed): a box around it closes early"

    def graded(answer: str):
        return grade_one(GradeRequest(gold=gold, response=as_written(answer, extract), extract=extract,
                                      tolerance=problem.tolerance), timeout)

    result = graded(gold)
    if result.timed_out:
        return f"timed out: comparing it with itself took over {timeout:g} s"
    if not result.correct:
        return f"not equal to itself: written as a model would, it reads back as {result.extracted!r}"
    if all(graded(other).correct for other in NOT_ONE_ANSWER):
        return f"equal to any answer: {' and '.join(NOT_ONE_ANSWER)} both grade as correct"
    return None


def bad_golds(problems: Iterable[Problem], extract: str, timeout: float = DEFAULT_TIMEOUT_S) -> list[BadGold]:
    """The problems of ``problems`` whose gold cannot be matched (see the module docstring)."""
    found = []
    for problem in problems:
        reason = gold_problem(problem, extract, timeout)
        if reason is not None:
            found.append(BadGold(problem.id, problem.answer, reason))
    return found
