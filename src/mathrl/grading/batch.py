"""Grading many (prediction, gold) pairs in a process pool, results in input order."""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Sequence
from dataclasses import dataclass

from mathrl.grading.equivalence import DEFAULT_APPROX_DIGITS, DEFAULT_TIMEOUT_S, answers_match
from mathrl.grading.extract import extract_answer


@dataclass(frozen=True)
class GradeRequest:
    """One pair: ``response`` is extracted per ``extract``; ``answer`` is used as given."""

    gold: str
    response: str | None = None
    answer: str | None = None
    extract: str = "boxed"
    tolerance: float | None = None
    approx_digits: int | None = DEFAULT_APPROX_DIGITS


@dataclass(frozen=True)
class GradeResult:
    extracted: str | None
    correct: bool


def grade_one(request: GradeRequest, timeout: float = DEFAULT_TIMEOUT_S) -> GradeResult:
    extracted = (request.answer if request.response is None
                 else extract_answer(request.response, request.extract))
    return GradeResult(extracted, answers_match(extracted, request.gold, request.tolerance, timeout,
                                                request.approx_digits))


def grade_many(requests: Sequence[GradeRequest], processes: int | None = None,
               timeout: float = DEFAULT_TIMEOUT_S, chunksize: int = 256) -> list[GradeResult]:
    """Grade every request; ``processes=1`` (or a small batch) grades in this process.

    Each pool worker is the main thread of its process, so the per-pair time bound there is a
    cheap alarm rather than a helper process.
    """
    if processes == 1 or len(requests) < 2 * chunksize:
        return [grade_one(r, timeout) for r in requests]
    with mp.get_context("spawn").Pool(processes) as pool:
        return pool.starmap(grade_one, [(r, timeout) for r in requests], chunksize=chunksize)
