"""The one grader: the eval metric, the RL correctness reward and the data filters all use it.

``grade(response, gold)`` extracts the final answer (thinking removed) and compares it with
``answers_match``; ``grade_many`` does the same for many pairs in a process pool.
"""

from __future__ import annotations

from mathrl.grading.batch import grade_many
from mathrl.grading.equivalence import DEFAULT_TIMEOUT_S, answers_match, parse_number
from mathrl.grading.extract import EXTRACT_MODES, extract_answer, last_boxed, split_thinking, strip_thinking
from mathrl.grading.normalize import normalize

__all__ = ["DEFAULT_TIMEOUT_S", "EXTRACT_MODES", "answers_match", "extract_answer", "grade",
           "grade_many", "last_boxed", "normalize", "parse_number", "split_thinking",
           "strip_thinking"]


def grade(response: str, gold: str, extract: str = "boxed", tolerance: float | None = None,
          timeout: float = DEFAULT_TIMEOUT_S) -> bool:
    """Is the final answer of ``response`` (found per ``extract``) equal to ``gold``?"""
    return answers_match(extract_answer(response, extract), gold, tolerance, timeout)
