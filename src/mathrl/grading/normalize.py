"""String normalisation of final answers (the Hendrycks/PRM800K ``strip_string`` family, extended).

Pure string work, no parsing: it must be cheap, because most pairs are decided right after it.
"""

from __future__ import annotations

import re

_DROP = ("\\left", "\\right", "\\!", "\\,", "\\;", "\\:", "\\quad", "\\qquad", "\\displaystyle",
         "\\$", "$", "\\mathrm", "\\mathbf", "\\textbf", "\\rm", "\\bf")
_WRAPPERS = ("\\textnormal", "\\textrm", "\\textit", "\\textup", "\\textbf", "\\text", "\\mathrm",
             "\\mathbf", "\\mathit", "\\boxed", "\\mbox", "\\operatorname")
_DEGREES = ("^{\\circ}", "^\\circ", "\\circ", "°", "\\degree")
# "5 cm", "12 inches", "3 square units", "\frac{1}{3} meters": a value, then words of two or
# more letters that are not LaTeX commands.
_UNIT_SUFFIX = re.compile(
    r"^(?P<num>[-+]?(?:[\d.,/]+|\\frac\{[^{}]*\}\{[^{}]*\}))\s*(?!pi\b)(?<!\\)[a-zA-Z]{2,}"
    r"[a-zA-Z .\-/]*?(?:\^?\{?[23]\}?)?\.?$")
# JSON-escaped LaTeX ("\\frac"): a doubled backslash before a command name is one backslash.
_DOUBLED = re.compile(r"(?<!\\)\\\\(?=(?:left|right|frac|dfrac|tfrac|cfrac|sqrt|boxed|text|pi|le|ge|leq|"
                      r"geq|neq|cdot|times|infty|in|cup|pm|begin|end|mathbf|mathrm)(?![a-zA-Z]))")
# Relation symbols in one spelling each, so "x \geq 5" and "x >= 5" are the same string.
_RELATIONS = [(re.compile(r"\\(?:leq?|leqslant)(?![a-zA-Z])|≤"), "<="),
              (re.compile(r"\\(?:geq?|geqslant)(?![a-zA-Z])|≥"), ">="),
              (re.compile(r"\\(?:neq?)(?![a-zA-Z])|≠"), "!="),
              (re.compile(r"\\lt(?![a-zA-Z])"), "<"), (re.compile(r"\\gt(?![a-zA-Z])"), ">")]
# "1 and 2", "(11,7)or(7,11)": words that join the answers of a list.
_LIST_WORDS = re.compile(r"\s+(?:and|or)\s+|(?<=[)\]])\s*(?:and|or)\s*(?=[(\[])")
_THOUSANDS_BANG = re.compile(r",\\!\s*")  # "12,\!000": MATH's thousands separator, not a list
_SPACE_MACRO = re.compile(r"(?<!\\)\\ ")  # the "\ " spacing macro, not a "\\" row end
_GROUPED_COMMA = re.compile(r"\{\s*,\s*\}")  # "1{,}000", "14 {, }916"
_WORD_UNITS = re.compile(r"\s*(degrees?|dollars?|cents?)\s*$")
_SPACES = re.compile(r"\s+")
# TeX reads "\frac 59" and "\frac12" as "\frac{5}{9}" and "\frac{1}{2}" (a bare argument is one
# token, spaces before it skipped): 2 MATH-500 golds and 9 of MATH train (17 of its 12k) are written
# so, and before spaces were allowed here no other spelling of them graded as correct.
_SQRT_BARE = re.compile(r"\\sqrt(\w)")
_FRAC_BARE = re.compile(r"\\frac\s*(\d)\s*(\d)")
_FRAC_HALF_BARE = re.compile(r"\\frac\{([^{}]*)\}\s*(\d)|\\frac\s*(\d)\s*\{([^{}]*)\}")


def unwrap(text: str, commands: tuple[str, ...] = _WRAPPERS) -> str:
    """``\\text{5 cm}`` -> ``5 cm``: each command's braced argument replaces the command."""
    for command in commands:
        start = 0
        while (i := text.find(command + "{", start)) >= 0:
            j = i + len(command)
            depth, k = 0, j
            while k < len(text):
                depth += {"{": 1, "}": -1}.get(text[k], 0)
                if depth == 0:
                    break
                k += 1
            if depth != 0:
                break  # unbalanced: leave it for the parser to reject
            text = text[:i] + text[j + 1:k] + text[k + 1:]
            start = i
    return text


def compact(normalized: str) -> str:
    """The form two answers are compared in as strings: no spaces at all."""
    return normalized.replace(" ", "")


def normalize(answer: str) -> str:
    """A canonical string form: wrappers, spacing macros, degrees, percent, units and dollars
    removed, ``\\dfrac``/``\\tfrac`` -> ``\\frac``, ``\\frac12`` -> ``\\frac{1}{2}``.

    Whitespace is collapsed to single spaces, not removed: ``\\pi r`` and ``\\log_2 8`` must not
    become ``\\pir`` and ``\\log_28`` for the parser. Compare with :func:`compact`.

    >>> normalize(r"\\text{(A) }\\dfrac12") , normalize(r"30^\\circ"), normalize(r"\\$5.00")
    ('(A) \\\\frac{1}{2}', '30', '5.00')
    """
    s = answer.strip().replace("\n", " ")
    latex = "\\" in s  # most answers are plain numbers: skip the LaTeX rewrites for them
    if latex:
        s = _DOUBLED.sub(r"\\", s)
        s = _THOUSANDS_BANG.sub(",", s)
        s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("\\cfrac", "\\frac")
        s = _SPACE_MACRO.sub(" ", s)
        s = unwrap(s)
    if "{" in s:
        s = _GROUPED_COMMA.sub(",", s)
    if latex or not s.isascii():
        for pattern, spelling in _RELATIONS:
            s = pattern.sub(spelling, s)
        for piece in _DEGREES:
            s = s.replace(piece, "")
    s = s.replace("\\%", "").replace("%", "")
    if latex or "$" in s:
        for piece in _DROP:
            s = s.replace(piece, "")
    if not s.isdigit():
        s = _LIST_WORDS.sub(", ", _SPACES.sub(" ", s).strip())
        s = _WORD_UNITS.sub("", s)
        if (m := _UNIT_SUFFIX.match(s)) and any(c.isdigit() for c in m["num"]):
            s = m["num"]  # "5 cm", "12 inches", "3 square units" -> the number
    if latex:
        s = _SQRT_BARE.sub(r"\\sqrt{\1}", s)
        s = _FRAC_BARE.sub(r"\\frac{\1}{\2}", s)
        s = _FRAC_HALF_BARE.sub(lambda m: (f"\\frac{{{m[1]}}}{{{m[2]}}}" if m[1] is not None
                                           else f"\\frac{{{m[3]}}}{{{m[4]}}}"), s)
    return s.rstrip(".")
