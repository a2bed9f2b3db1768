"""String normalisation of final answers (the Hendrycks/PRM800K ``strip_string`` family, extended).

Pure string work, no parsing: it must be cheap, because most pairs are decided right after it.
"""

from __future__ import annotations

import re

_DROP = ("\\left", "\\right", "\\!", "\\,", "\\;", "\\:", "\\quad", "\\qquad", "\\displaystyle",
         "\\$", "$", "\\mathrm", "\\mathbf", "\\textbf", "\\rm", "\\bf")
_WRAPPERS = ("\\text", "\\textbf", "\\mathrm", "\\mathbf", "\\boxed", "\\textup", "\\mbox", "\\operatorname")
_DEGREES = ("^{\\circ}", "^\\circ", "\\circ", "°", "\\degree")
# "5 cm", "12 inches", "3 square units": a number, then words of two or more letters.
_UNIT_SUFFIX = re.compile(
    r"^(?P<num>[-+]?[\d.,/]+)\s*(?!pi\b)[a-zA-Z]{2,}[a-zA-Z .\-/]*?(?:\^?\{?[23]\}?)?\.?$")
_SQRT_BARE = re.compile(r"\\sqrt(\w)")
_FRAC_BARE = re.compile(r"\\frac(\d)(\d)")
_FRAC_HALF_BARE = re.compile(r"\\frac\{([^{}]*)\}(\d)|\\frac(\d)\{([^{}]*)\}")


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
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("{,}", ",")
    s = unwrap(s)
    for piece in _DEGREES:
        s = s.replace(piece, "")
    s = s.replace("\\%", "").replace("%", "")
    for piece in _DROP:
        s = s.replace(piece, "")
    s = re.sub(r"\s*(degrees?|dollars?|cents?)\s*$", "", s)
    if (m := _UNIT_SUFFIX.match(s.strip())) and any(c.isdigit() for c in m["num"]):
        s = m["num"]  # "5 cm", "12 inches", "3 square units" -> the number
    s = re.sub(r"\s+", " ", s).strip()
    s = _SQRT_BARE.sub(r"\\sqrt{\1}", s)
    s = _FRAC_BARE.sub(r"\\frac{\1}{\2}", s)
    s = _FRAC_HALF_BARE.sub(lambda m: (f"\\frac{{{m[1]}}}{{{m[2]}}}" if m[1] is not None
                                       else f"\\frac{{{m[3]}}}{{{m[4]}}}"), s)
    return s.rstrip(".")
