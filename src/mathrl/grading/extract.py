"""Pulling the final answer out of a model's response."""

from __future__ import annotations

import re

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
_BOX_COMMANDS = ("\\boxed", "\\fbox")


def split_thinking(text: str) -> tuple[str | None, str]:
    """(thinking, the rest) of a response; thinking is None when the response has no thinking block.

    A thought that was opened and never closed (output truncated mid-thought) is all thinking and
    leaves no rest: an answer-like string inside unfinished thinking is not the model's final
    answer. Without ``<think>`` but with ``</think>`` (templates that put ``<think>`` in the
    prompt) everything before ``</think>`` is thinking.
    """
    if THINK_CLOSE in text:
        head, _, rest = text.rpartition(THINK_CLOSE)
        return head.split(THINK_OPEN, 1)[-1], rest
    if THINK_OPEN in text:
        return text.split(THINK_OPEN, 1)[1], ""
    return None, text


def strip_thinking(text: str) -> str:
    """The part of a response after its thinking block (see ``split_thinking``)."""
    return split_thinking(text)[1]


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` or ``\\fbox{...}`` (nested braces kept), or ``\\boxed 5``.

    >>> last_boxed(r"so $\\boxed{\\frac{1}{2}}$ and not \\boxed{3")
    '\\\\frac{1}{2}'
    """
    best = None
    for command in _BOX_COMMANDS:
        start = 0
        while (i := text.find(command, start)) >= 0:
            start = i + len(command)
            content = _argument(text, start)
            if content is not None and (best is None or i > best[0]):
                best = (i, content)
    return best[1] if best else None


def _argument(text: str, i: int) -> str | None:
    if i < len(text) and text[i] == "{":
        depth = 0
        for j in range(i, len(text)):
            if text[j] == "{":
                depth += 1
            elif text[j] == "}":
                depth -= 1
                if depth == 0:
                    return text[i + 1:j]
        return None  # unbalanced: truncated output
    if i < len(text) and text[i] == " ":
        rest = text[i:].strip().split()
        return rest[0].rstrip("$.") if rest else None
    return None


_GSM8K = re.compile(r"####\s*([^\n]+)")
_ANSWER_IS = re.compile(
    r"(?:the\s+(?:final\s+)?answer\s+is|final\s+answer\s*:|^\s*answer\s*:|^\s*a\s*:)\s*(.+?)\s*$",
    re.IGNORECASE | re.MULTILINE)
_NUMBER = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?|-?\.\d+")
EXTRACT_MODES = ("boxed", "gsm8k", "auto")


def extract_gsm8k(text: str) -> str | None:
    """The text after the last ``####`` (GSM8K's reference format)."""
    found = _GSM8K.findall(text)
    return found[-1].strip() if found else None


def extract_answer_is(text: str) -> str | None:
    """The last "the answer is X" / "Final answer: X" / "Answer: X" / "A: X" statement."""
    found = _ANSWER_IS.findall(text)
    if not found:
        return None
    answer = found[-1].strip().rstrip(".")
    return last_boxed(answer) or answer.strip("$ ")


def last_number(text: str) -> str | None:
    found = _NUMBER.findall(text)
    return found[-1].replace("$", "").rstrip(".") if found else None


def extract_answer(response: str, mode: str = "boxed") -> str | None:
    """The final answer of ``response`` (thinking removed) under ``mode``.

    ``boxed``: the last ``\\boxed{}``. ``gsm8k``: ``#### N``, else an answer statement, else
    the last number. ``auto``: ``\\boxed{}``, then the gsm8k chain. A truncated thought gives None.
    """
    if mode not in EXTRACT_MODES:
        raise ValueError(f"extract mode must be one of {EXTRACT_MODES}, got {mode!r}")
    text = strip_thinking(response)
    if mode in ("boxed", "auto") and (boxed := last_boxed(text)) is not None:
        return boxed
    if mode == "boxed":
        return None
    return extract_gsm8k(text) or extract_answer_is(text) or last_number(text)
