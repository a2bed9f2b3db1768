"""Deciding whether a predicted answer equals the gold answer."""

from __future__ import annotations

import re
from fractions import Fraction

_NUMBER = re.compile(r"[+-]?(\d{1,3}(,\d{3})+|\d+)(\.\d+)?|[+-]?\.\d+")
_STRIP = ("$", "\\!", "\\,", "\\;", "\\left", "\\right", "\\displaystyle")


def normalize(answer: str) -> str:
    """Whitespace, math delimiters, spacing macros and a trailing period removed."""
    s = answer.strip()
    for piece in _STRIP:
        s = s.replace(piece, "")
    s = re.sub(r"\s+", "", s)
    return s.rstrip(".")


def parse_number(answer: str) -> Fraction | None:
    """An exact rational for a plain number: signs, thousands commas, leading zeros, decimals."""
    s = normalize(answer)
    if not _NUMBER.fullmatch(s):
        return None
    return Fraction(s.replace(",", ""))


def answers_match(pred: str | None, gold: str) -> bool:
    """True when ``pred`` and ``gold`` are the same answer: equal after normalisation, or equal
    numbers. Never raises; a missing prediction is never correct.

    >>> answers_match("1,000", "1000"), answers_match("025", "25"), answers_match("3", "4")
    (True, True, False)
    """
    if pred is None:
        return False
    try:
        if normalize(pred) == normalize(gold):
            return True
        a, b = parse_number(pred), parse_number(gold)
        return a is not None and a == b
    except (ValueError, ZeroDivisionError, ArithmeticError):
        return False
