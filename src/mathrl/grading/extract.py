"""Pulling the final answer out of a model's response."""

from __future__ import annotations

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
_BOX_COMMANDS = ("\\boxed", "\\fbox")


def strip_thinking(text: str) -> str:
    """The part of a response after its thinking block.

    A thought that was opened and never closed (output truncated mid-thought) leaves nothing:
    an answer-like string inside unfinished thinking is not the model's final answer.
    """
    if THINK_CLOSE in text:
        return text.rsplit(THINK_CLOSE, 1)[1]
    if THINK_OPEN in text:
        return ""
    return text


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


def extract_boxed_answer(response: str) -> str | None:
    """The final answer of a ``\\boxed{}``-style response, thinking removed; None if there is none."""
    return last_boxed(strip_thinking(response))
