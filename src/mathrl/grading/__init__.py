"""The one grader: the eval metric, the RL correctness reward and the data filters all use it.

``grade(response, gold)`` extracts the final answer (thinking removed) and compares it with
``answers_match``; :class:`Grader` does the same for the completions of many problems, in a
pool of worker processes with a hard per-answer deadline, counting timeouts apart.
"""

from __future__ import annotations

from mathrl.grading.equivalence import DEFAULT_APPROX_DIGITS, DEFAULT_TIMEOUT_S, answers_match, parse_number
from mathrl.grading.extract import (
    EXTRACT_MODES,
    extract_answer,
    final_boxes,
    last_boxed,
    split_thinking,
    strip_thinking,
)
from mathrl.grading.grader import Grader, GradeRequest, GradeResult
from mathrl.grading.normalize import normalize

__all__ = ["DEFAULT_APPROX_DIGITS", "DEFAULT_TIMEOUT_S", "EXTRACT_MODES", "GradeRequest", "GradeResult",
           "Grader", "answers_match", "extract_answer", "final_boxes", "grade", "last_boxed", "normalize",
           "parse_number", "split_thinking", "strip_thinking"]


def grade(response: str, gold: str, extract: str = "boxed", tolerance: float | None = None,
          timeout: float = DEFAULT_TIMEOUT_S, approx_digits: int | None = DEFAULT_APPROX_DIGITS) -> bool:
    """Is the final answer of ``response`` (found per ``extract``) equal to ``gold``?

    What counts as equal, kind by kind, is in ``mathrl.grading.equivalence``; how each extraction
    mode reads a response is in ``mathrl.grading.extract``.
    """
    return answers_match(extract_answer(response, extract), gold, tolerance, timeout, approx_digits)
