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

import bisect
import re

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
_BOX = re.compile(r"\\(?:boxed|fbox)")
_BOX_WORD = re.compile(r" +(\S+)")  # "\boxed 5"
_BRACE = re.compile(r"[{}]")


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
    in order. An unbalanced box (truncated output) is not a box. Linear in the text's length."""
    found: list[Span] = []
    closing = None
    for m in _BOX.finditer(text):
        if found and m.start() < found[-1][1]:
            continue  # a box inside the previous box
        i = m.end()
        if text.startswith("{", i):
            closing = _closing_braces(text) if closing is None else closing
            if (j := closing.get(i)) is not None:
                found.append((m.start(), j + 1, text[i + 1:j]))
        elif (word := _BOX_WORD.match(text, i)) is not None:
            found.append((m.start(), word.end(), word[1].rstrip("$.")))
    return found


def _closing_braces(text: str) -> dict[int, int]:
    """Index of each ``{`` -> index of the ``}`` that closes it; unclosed ones are absent."""
    pairs, stack = {}, []
    for m in _BRACE.finditer(text):
        if m.group() == "{":
            stack.append(m.start())
        elif stack:
            pairs[stack.pop()] = m.start()
    return pairs


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
    group = _group(boxes(text), text)
    return _join(group) if group else None


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


def _group(spans: list[Span], text: str, last: bool = True) -> list[Span]:
    """The last (or first) span and the spans joined to it by connecting gaps, in order."""
    if not spans:
        return []
    if last:
        i = len(spans) - 1
        while i > 0 and _connects(text[spans[i - 1][1]:spans[i][0]]):
            i -= 1
        return spans[i:]
    j = 0
    while j + 1 < len(spans) and _connects(text[spans[j][1]:spans[j + 1][0]]):
        j += 1
    return spans[:j + 1]


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
    r"final\s+answer\s*(?:is\b|:)|the\s+answer\s+is\b|^[ \t]*answer[ \t]*:|^[ \t]*a[ \t]*:",
    re.IGNORECASE | re.MULTILINE)
# Math delimiters; an escaped dollar is text. Display math may span lines, inline $...$ may not.
_DELIMITER = re.compile(r"\\\$|\$\$|\$|\\\[|\\\]|\\\(|\\\)")
_CLOSER = {"$$": "$$", "\\[": "\\]", "\\(": "\\)", "$": "$"}
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
    """Every ``$$...$$``, ``\\[...\\]``, ``\\(...\\)`` and single-line ``$...$``, in order.

    Each opener takes the first closer after it; an opener that never closes is text (a lone
    ``$`` is a currency sign). Closers are found by bisection, so the scan is O(n log n) even for
    text made of nothing but unclosed openers.
    """
    tokens = [(m.start(), m.group()) for m in _DELIMITER.finditer(text) if m.group() != "\\$"]
    starts = [pos for pos, _ in tokens]
    closers: dict[str, list[int]] = {c: [] for c in _CLOSER.values()}
    for pos, token in tokens:
        if token in closers:
            closers[token].append(pos)
        if token == "$$":
            closers["$"].append(pos)  # "$a$$": the inline span closes at the first of the two
    newlines = [m.start() for m in re.finditer("\n", text)]
    spans, i = [], 0
    while i < len(tokens):
        pos, token = tokens[i]
        closer = _CLOSER.get(token)
        begin = pos + len(token)
        found = closers[closer] if closer else []
        k = bisect.bisect_left(found, begin)
        if closer is None or k == len(found) or found[k] == begin:
            i += 1  # not an opener, never closed, or empty
            continue
        end = found[k]
        if token == "$" and (n := bisect.bisect_left(newlines, begin)) < len(newlines) and newlines[n] < end:
            i += 1  # an inline span does not cross lines
            continue
        spans.append((pos, end + len(closer), text[begin:end]))
        i = bisect.bisect_left(starts, end + len(closer))
    return spans


def _outside_math(text: str, spans: list[Span]) -> str:
    """``text`` with its math spans blanked out, offsets kept."""
    pieces, last = [], 0
    for start, end, _ in spans:
        pieces += [text[last:start], " " * (end - start)]
        last = end
    return "".join(pieces) + text[last:]


def last_math(text: str) -> str | None:
    """The last math span (with spans joined to it by "and"/"or"/commas) or number outside math.

    >>> last_math("We find $x \\\\lt 3$."), last_math("so 1,000.99m2"), last_math("$21,16$ or $11$")
    ('x \\\\lt 3', '1,000.99', '21,16, 11')
    """
    spans = math_spans(text)
    outside = _outside_math(text, spans)
    number = None
    for number in _NUMBER.finditer(outside):  # noqa: B007 (the last one is wanted)
        pass
    if number is not None and (not spans or number.start() > spans[-1][0]):
        return number.group()
    group = _group(spans, text)
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
        return start, _join(_group(spans, line, last=False))
    sentence = _SENTENCE_END.split(line, 1)[0].strip()
    if not sentence:
        return None
    if _is_bare_math(sentence):
        return start, sentence.strip("$ ").rstrip(".")
    answer = last_math(sentence)
    return (start, answer) if answer is not None else None


def _is_bare_math(sentence: str) -> bool:
    """No words of two or more letters outside math spans and LaTeX commands."""
    outside = _outside_math(sentence, math_spans(sentence))
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
    group = _group(boxes(text), text)
    statement = _last_statement(text)
    if group and (statement is None or group[-1][0] > statement[0]):
        return _join(group)
    if statement is not None:
        return statement[1]
    if _is_bare_math(text):  # the whole response is the answer: "\\frac{10}{9}", "1 000"
        return re.sub(r"^\s*(\$+|\\\[|\\\()|(\$+|\\\]|\\\))\s*$", "", text).strip() or None
    return extract_gsm8k(text) or last_math(text)
