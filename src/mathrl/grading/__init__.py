"""The one grader: the eval metric, the RL correctness reward and the data filters all use it."""

from __future__ import annotations

from mathrl.grading.equivalence import answers_match, normalize, parse_number
from mathrl.grading.extract import extract_boxed_answer, last_boxed, strip_thinking

__all__ = ["answers_match", "extract_boxed_answer", "grade", "last_boxed", "normalize",
           "parse_number", "strip_thinking"]


def grade(response: str, gold: str) -> bool:
    """Is the final ``\\boxed{}`` answer of ``response`` (thinking removed) equal to ``gold``?"""
    return answers_match(extract_boxed_answer(response), gold)
