"""Pulling the final answer out of a model's response.

Modes (``extract_answer(response, mode)``), each explicit about what it reads:

- ``boxed``: the last ``\\boxed{}``. The studies' convention and the RL default: a response that
  boxes an intermediate result and then its final one is graded on the final one.
- ``boxes``: the final *group* of boxes, joined as a list: ``\\boxed{(2, 2)} \\quad \\text{and}
  \\quad \\boxed{(6, 2)}`` reads ``(2, 2), (6, 2)``. Boxes belong to one group when only
  punctuation, spacing and math delimiters separate them, or a short phrase (at most five words)
  with "and" or "or" in it; a sentence between two boxes ends the group, so an intermediate
  box is not gathered. Identical boxes count once. Gathering is safe for rewards: hedging with
  ``\\boxed{3} or \\boxed{4}`` gives the list ``3, 4``, which equals no single gold answer.
- ``gsm8k``: ``#### N``, else an answer statement, else the last number.
- ``auto``: for responses that may not box (base models, other prompts, Minerva's "Final
  Answer: The final answer is $X$. I hope it is correct."): whichever comes later of the final
  box group and the last answer statement; else ``#### N``; else the last math span
  (``$...$``, ``$$...$$``, ``\\(...\\)``, ``\\[...\\]``) or number in the text.

An answer statement is "final answer is", "Final Answer:", "the answer is", "Answer:", "A:".
What follows it is read as: its boxes, else the math spans it starts with, else (cut at the end
of the sentence) the sentence itself when it is bare math, else the sentence's last math span
or number (``The largest $n$ is 34.`` reads ``34``).

Thinking (``<think>...</think>``) is removed first; an unfinished thought yields no answer.
"""

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


# A span of the text: (start, end, content), end exclusive.
Span = tuple[int, int, str]


def boxes(text: str) -> list[Span]:
    """Every outermost ``\\boxed{...}`` / ``\\fbox{...}`` (nested braces kept) or ``\\boxed 5``,
    in order. An unbalanced box (truncated output) is not a box."""
    found = []
    start = 0
    while True:
        hits = [(i, c) for c in _BOX_COMMANDS if (i := text.find(c, start)) >= 0]
        if not hits:
            return found
        i, command = min(hits)
        end, content = _argument(text, i + len(command))
        if content is not None:
            found.append((i, end, content))
            start = end
        else:
            start = i + len(command)


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` or ``\\fbox{...}`` (nested braces kept), or ``\\boxed 5``.

    >>> last_boxed(r"so $\\boxed{\\frac{1}{2}}$ and not \\boxed{3")
    '\\\\frac{1}{2}'
    """
    found = boxes(text)
    return found[-1][2] if found else None


def final_boxes(text: str) -> str | None:
    """The final group of boxes, as one comma-separated answer (see the module docstring).

    >>> final_boxes(r"$\\boxed{(2, 2)} \\quad \\text{and} \\quad \\boxed{(6, 2)}$")
    '(2, 2), (6, 2)'
    """
    group = _final_group(boxes(text), text)
    return _join(group) if group else None


def _argument(text: str, i: int) -> tuple[int, str | None]:
    """(end, content) of the argument at ``text[i]``: ``{...}`` or `` word``."""
    if i < len(text) and text[i] == "{":
        depth = 0
        for j in range(i, len(text)):
            if text[j] == "{":
                depth += 1
            elif text[j] == "}":
                depth -= 1
                if depth == 0:
                    return j + 1, text[i + 1:j]
        return len(text), None  # unbalanced: truncated output
    if i < len(text) and text[i] == " ":
        m = re.match(r"\s*(\S+)", text[i:])
        if m:
            return i + m.end(), m[1].rstrip("$.")
    return i, None


# Between two parts of one answer: spacing, delimiters, punctuation, \text{...} wrappers.
_GAP_NOISE = re.compile(r"\\(?:quad|qquad|text|textnormal|textrm|mathrm|mbox|hspace\{[^}]*\})"
                        r"|\\[,;:! ]|\\\[|\\\]|\\\(|\\\)|\\\\|[${}\s,;]")
_CONNECTOR_WORDS = {"and", "or"}
MAX_CONNECTOR_WORDS = 5


def _connects(gap: str) -> bool:
    """Does ``gap`` (the text between two answer parts) join them into one answer?"""
    words = _GAP_NOISE.sub(" ", gap).split()
    if not words:
        return True
    if any(w.endswith(".") or w.endswith(":") for w in words):
        return False  # a sentence or a new statement between them
    return len(words) <= MAX_CONNECTOR_WORDS and any(w.lower() in _CONNECTOR_WORDS for w in words)


def _final_group(spans: list[Span], text: str) -> list[Span]:
    """The last span and those before it that connect to it, in order."""
    if not spans:
        return []
    group = [spans[-1]]
    for span in reversed(spans[:-1]):
        if not _connects(text[span[1]:group[0][0]]):
            break
        group.insert(0, span)
    return group


def _join(group: list[Span]) -> str:
    contents, seen = [], set()
    for _, _, content in group:
        key = re.sub(r"\s+", "", content)
        if key not in seen:  # the same answer boxed twice counts once
            seen.add(key)
            contents.append(content.strip())
    return ", ".join(contents)


# ---- answer statements and math spans --------------------------------------------------------

_GSM8K = re.compile(r"####\s*([^\n]+)")
_STATEMENT = re.compile(
    r"final\s+answer\s*(?:is\b|:)|the\s+answer\s+is\b|^\s*answer\s*:|^\s*a\s*:", re.IGNORECASE | re.MULTILINE)
# Display math may span lines; inline $...$ may not (a lone "$" is a currency sign).
_MATH_SPAN = re.compile(r"\$\$(.+?)\$\$|\\\[(.+?)\\\]|\\\((.+?)\\\)|(?<![\\$])\$((?:\\\$|[^$\n])+?)(?<!\\)\$",
                        re.DOTALL)
# A number in prose: not glued to a word before it ("AZYUK2A" has none); thousands commas,
# a decimal point or comma, a fraction a/b.
_NUMBER = re.compile(r"(?<![\w.])-?(?:\d+(?:,\d{3})*(?:[.,]\d+)?(?:/\d+)?|\.\d+)(?!\d)")
_SENTENCE_END = re.compile(r"\.(?=\s|$)|\n")
EXTRACT_MODES = ("boxed", "boxes", "gsm8k", "auto")


def extract_gsm8k(text: str) -> str | None:
    """The text after the last ``####`` (GSM8K's reference format)."""
    found = _GSM8K.findall(text)
    return found[-1].strip() if found else None


def math_spans(text: str) -> list[Span]:
    """Every ``$$...$$``, ``\\[...\\]``, ``\\(...\\)`` and single-line ``$...$``, in order."""
    return [(m.start(), m.end(), next(g for g in m.groups() if g is not None))
            for m in _MATH_SPAN.finditer(text)]


def last_math(text: str) -> str | None:
    """The last math span (with spans joined to it by "and"/"or"/commas) or number outside math.

    >>> last_math("We find $x \\\\lt 3$."), last_math("so 1,000.99m2"), last_math("$21,16$ or $11$")
    ('x \\\\lt 3', '1,000.99', '21,16, 11')
    """
    spans = math_spans(text)
    numbers = [(m.start(), m.end(), m.group()) for m in _NUMBER.finditer(text)
               if not any(s <= m.start() < e for s, e, _ in spans)]
    if numbers and (not spans or numbers[-1][0] > spans[-1][0]):
        return numbers[-1][2]
    group = _final_group(spans, text)
    return _join(group) if group else None


def _last_statement(text: str) -> tuple[int, str] | None:
    """(position, answer) of the last answer statement (see the module docstring)."""
    found = list(_STATEMENT.finditer(text))
    if not found:
        return None
    start = found[-1].end()
    rest = text[start:].lstrip(" \t:")
    if rest.startswith("\n"):  # "The answer is:\n\n\\[ \\boxed{5} \\]": the next non-empty line
        rest = rest.lstrip()
    line = rest.split("\n\n", 1)[0]
    if (boxed := final_boxes(line)) is not None:
        return start, boxed
    spans = math_spans(line)
    if spans and not line[:spans[0][0]].strip():  # "is $X$ and $Y$. I hope it is correct."
        return start, _join(_final_group_from_start(spans, line))
    sentence = _SENTENCE_END.split(line, 1)[0].strip()
    if not sentence:
        return None
    if _is_bare_math(sentence):
        return start, sentence.strip("$ ").rstrip(".")
    answer = last_math(sentence)
    return (start, answer) if answer is not None else None


def _final_group_from_start(spans: list[Span], text: str) -> list[Span]:
    """The first span and the spans that connect to it, in order."""
    group = [spans[0]]
    for span in spans[1:]:
        if not _connects(text[group[-1][1]:span[0]]):
            break
        group.append(span)
    return group


def _is_bare_math(sentence: str) -> bool:
    """No words of two or more letters outside math spans and LaTeX commands."""
    outside = _MATH_SPAN.sub(" ", sentence)
    return not re.search(r"(?<![\\a-zA-Z])[a-zA-Z]{2,}", outside)


def extract_answer_is(text: str) -> str | None:
    """The answer of the last "the answer is X" / "Final answer: X" / "Answer: X" / "A: X" statement."""
    found = _last_statement(text)
    return found[1] if found else None


def last_number(text: str) -> str | None:
    """The last number in the text (a GSM8K-style fallback), dollar signs and commas kept."""
    found = _NUMBER.findall(text.replace("$", " "))
    return found[-1] if found else None


def extract_answer(response: str, mode: str = "boxed") -> str | None:
    """The final answer of ``response`` (thinking removed) under ``mode`` (see the module docstring).

    A truncated thought gives None.
    """
    if mode not in EXTRACT_MODES:
        raise ValueError(f"extract mode must be one of {EXTRACT_MODES}, got {mode!r}")
    text = strip_thinking(response)
    if mode == "boxed":
        return last_boxed(text)
    if mode == "boxes":
        return final_boxes(text)
    if mode == "gsm8k":
        return extract_gsm8k(text) or extract_answer_is(text) or last_number(text)
    group = _final_group(boxes(text), text)
    statement = _last_statement(text)
    if group and (statement is None or group[-1][0] > statement[0]):
        return _join(group)
    if statement is not None:
        return statement[1]
    if _is_bare_math(text):  # the whole response is the answer: "\\frac{10}{9}", "1 000"
        return re.sub(r"^\s*(\$+|\\\[|\\\()|(\$+|\\\]|\\\))\s*$", "", text).strip() or None
    return extract_gsm8k(text) or last_math(text)
