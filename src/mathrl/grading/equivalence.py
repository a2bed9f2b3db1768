"""Deciding whether a predicted final answer equals the gold answer.

Order of checks, cheapest first: equal after string normalisation; equal as exact rationals;
then, under a time bound, structure and symbolic equality on expression trees from the safe
parser (``grading.parse``): exact for constants, by evaluation at random points for
expressions with variables. What counts as equal, kind by kind, and why:

- **Numbers.** Thousands separators (``1,000``, ``1 000``, ``1{,}000``), leading zeros,
  decimals, fractions and scientific notation are exact rationals. A comma followed by a space
  separates list items, never thousands (``32, 349`` is not 32349). A decimal comma (``2,74``,
  ``1000,99``, ``0,111``) is read as a decimal point only against a number written with a point,
  and only where it cannot be a thousands separator or a two-item list of one-digit numbers
  (``3,5`` stays the list 3, 5). An unreduced fraction is its value (``\\frac{2}{4}`` is
  ``\\frac{1}{2}``): the question is whether the answer is right, and a reward that refused it
  would teach formatting, not mathematics.
- **Rounding** (``approx_digits``, default 6). A decimal on one side matches an exact value that
  no short decimal writes (``\\frac{1}{12}``, ``\\sqrt{2}``, ``\\pi``) when it agrees with it to
  the last digit written (rounded or truncated) and carries at least ``approx_digits``
  significant digits: ``0.0833333`` is 1/12, ``1.414`` is not sqrt(2). Six digits is what a
  model that computed the value writes and a guess does not; ``approx_digits=None`` compares
  exactly. Two decimals are both exact as written: ``7.78`` is not ``7.7778``.
- **Lists.** Answers separated by commas, semicolons, "and" or "or" (``\\text{ and }``), or
  gathered from several boxes (``extract_answer(..., "boxes")``), are a list of answers: equal
  when they hold the same answers in any order, each counted once (``1, 3, 3`` is ``1, 3``).
  A list never equals a single answer. Against a set ``\\{...\\}`` a list is unordered; against a
  tuple ``(...)`` it is compared in order (``1, 3`` is the point ``(1, 3)``, not ``(3, 1)``);
  against an interval ``[...]`` it is not equal. ``p=5,q=2; p=7,q=2`` is the tuples
  ``(5,2), (7,2)``. Braces without a backslash are LaTeX grouping: ``{1,2,3}`` is a list.
- **Tuples, intervals, sets, matrices.** Tuples and intervals in order with matching brackets
  (items may be separated by ``;``), sets in any order, unions of intervals in any order,
  matrices (``pmatrix``, ``bmatrix``, ``array``...) entry by entry.
- **Labels.** ``(p,q)=(3,2)``, ``AB=4``, ``f(x)=1``, ``V_1:V_2=11:21`` and ``x \\in [-2,7]``
  against an unlabelled answer compare the value. A label is a name: letters, subscripts,
  brackets, ``:`` and ``|``, no digits and no arithmetic, so ``7 = 11a+c`` or ``a+3z=0`` is an
  equation, not a labelled 7 or 0. Two labelled answers must have the same label.
- **Relations.** ``\\leq``, ``\\le``, ``<=``, ``\\lt`` ... are one notation. Two equations are
  equal when one is a non-zero multiple of the other (``2x+4y-3=0`` is
  ``y=-\\frac{1}{2}x+\\frac{3}{4}``); two inequalities when one is a positive multiple of the
  other after turning ``>`` round (``-x > -1`` is ``x < 1``, ``5 \\geq x`` is ``x \\leq 5``).
  A chain ``x = 5+5+1 = 11`` is its first and last sides. An inequality on a label is its set:
  ``-793 < a < 10`` is ``(-793, 10)``, ``x > 5`` is ``(5, \\infty)``, and ``-2 \\le x \\le 7`` is
  ``x \\in [-2, 7]``. ``a \\approx b`` after an exact value is commentary and dropped
  (``x = \\frac{1}{3} \\approx 0.33``); on its own it states the value (``x \\approx 11`` is 11).
- **Notation.** ``\\pm a`` is the list ``a, -a``; function powers (``\\sec^2 y``) are
  ``(\\sec y)^2`` and identities hold by evaluation; units and ``\\text{...}`` after a value are
  dropped; ``\\cfrac``, ``\\textnormal``, the ``\\ `` spacing macro, doubled backslashes from JSON
  (``\\\\frac``) and Qwen's ``(\\begin{pmatrix}...\\end{pmatrix})`` wrapper are normalised.
"""

from __future__ import annotations

import random
import re
from fractions import Fraction
from typing import NamedTuple

import sympy

from mathrl.grading.bounded import TIMED_OUT, TimedOut, call_bounded
from mathrl.grading.normalize import compact, normalize
from mathrl.grading.parse import ParseError, parse

DEFAULT_TIMEOUT_S = 2.0
DEFAULT_APPROX_DIGITS = 6
MAX_ANSWER_CHARS = 1000  # longer "answers" are compared as normalised strings only
REL_TOL = 1e-9  # float noise when comparing evaluated constants

# Thousands groups cannot start with 0: "0,111" is not one hundred and eleven.
_PLAIN_NUMBER = re.compile(r"[+-]?([1-9]\d{0,2}(,\d{3})+|\d+)(\.\d*)?([eE][-+]?\d+)?|[+-]?\.\d+")
_SPACED_THOUSANDS = re.compile(r"[+-]?[1-9]\d{0,2}( \d{3})+(\.\d+)?")
_DECIMAL_COMMA = re.compile(r"([+-]?\d+),(\d+)")
_FRAC_NUMBER = re.compile(r"([+-]?)\\frac\{([+-]?\d+)\}\{([+-]?\d+)\}|([+-]?\d+)/(\d+)")
_DECIMAL = re.compile(r"[+-]?(\d*)\.(\d+)")


class Rules(NamedTuple):
    """How lenient a comparison is: an absolute tolerance (a benchmark's), and the significant
    digits a rounded decimal needs (None: exact)."""

    tolerance: float | None = None
    approx_digits: int | None = DEFAULT_APPROX_DIGITS


def parse_number(answer: str) -> Fraction | None:
    """An exact rational for a plain number: signs, thousands commas, leading zeros, decimals,
    scientific notation, ``a/b`` and ``\\frac{a}{b}`` with integer parts; else None.

    >>> parse_number("1,000"), parse_number("025"), parse_number("\\\\frac{-3}{6}")
    (Fraction(1000, 1), Fraction(25, 1), Fraction(-1, 2))
    """
    return _number(normalize(answer))


def _number(s: str) -> Fraction | None:
    """:func:`parse_number` of an already normalised string."""
    s = s.strip()
    if _SPACED_THOUSANDS.fullmatch(s):
        s = s.replace(" ", "")
    if re.search(r",\s", s):  # "32, 349" is a list
        return None
    s = compact(s)
    if _PLAIN_NUMBER.fullmatch(s):
        try:
            return Fraction(s.replace(",", ""))
        except (ValueError, ZeroDivisionError):
            return None
    if m := _FRAC_NUMBER.fullmatch(s):
        sign, num, den = (m[1], m[2], m[3]) if m[2] is not None else ("", m[4], m[5])
        if int(den) == 0:
            return None
        value = Fraction(int(num), int(den))
        return -value if sign == "-" else value
    return None


def _decimal_comma(s: str) -> Fraction | None:
    """``2,74`` -> 2.74 where the comma cannot be a thousands separator or split ``3,5``."""
    m = _DECIMAL_COMMA.fullmatch(compact(s))
    if m is None or _PLAIN_NUMBER.fullmatch(m[0]) or (len(m[1].lstrip("+-")) == 1 == len(m[2])):
        return None
    return Fraction(f"{m[1]}.{m[2]}")


def answers_match(pred: str | None, gold: str, tolerance: float | None = None,
                  timeout: float = DEFAULT_TIMEOUT_S,
                  approx_digits: int | None = DEFAULT_APPROX_DIGITS) -> bool:
    """True when ``pred`` and ``gold`` are the same answer. Never raises; bounded by ``timeout``.

    ``tolerance`` is an absolute numeric tolerance (OlympiadBench's ``error`` field);
    ``approx_digits`` the significant digits a rounded decimal needs (None: exact only).

    >>> answers_match("1,000", "1000"), answers_match("\\\\dfrac{1}{2}", "0.5"), answers_match("3", "4")
    (True, True, False)
    """
    verdict = compare(pred, gold, tolerance, timeout, approx_digits)
    return verdict is not TIMED_OUT and bool(verdict)


def compare(pred: str | None, gold: str, tolerance: float | None = None, timeout: float = DEFAULT_TIMEOUT_S,
            approx_digits: int | None = DEFAULT_APPROX_DIGITS) -> bool | TimedOut:
    """:func:`answers_match`, telling an overrun of ``timeout`` (``TIMED_OUT``) from "not equal"."""
    if pred is None or gold is None:
        return False
    rules = Rules(tolerance, approx_digits)
    try:
        if len(pred) > MAX_ANSWER_CHARS or len(gold) > MAX_ANSWER_CHARS:
            return pred.strip() == gold.strip()
        if pred.strip() == gold.strip() and pred.strip():
            return True
        p, g = normalize(pred), normalize(gold)
        if not p:
            return False
        if compact(p) == compact(g):
            return True
        a, b = _number(p), _number(g)
        if a is not None and b is not None:
            return _numbers_equal(a, b, p, g, rules)
        if (a is None) != (b is None) and (c := _decimal_comma(p if a is None else g)) is not None:
            written = g if a is None else p
            if "." in written:
                return _numbers_equal(c, a if a is not None else b, written, written, rules)
        verdict = call_bounded(_structured_match, (p, g, rules), timeout, False, on_timeout=TIMED_OUT)
        return verdict if verdict is TIMED_OUT else bool(verdict)
    except Exception:
        return False


def _numbers_equal(a: Fraction, b: Fraction, p: str, g: str, rules: Rules) -> bool:
    if rules.tolerance:
        return abs(a - b) <= Fraction(rules.tolerance)
    if a == b:
        return True
    return _rounded_to(p, b, rules) or _rounded_to(g, a, rules)


def _rounded_to(written: str, exact: Fraction | sympy.Expr, rules: Rules) -> bool:
    """Is ``written`` a decimal that is ``exact`` to its last digit, with enough digits?

    Only for an exact value no short decimal writes: a terminating decimal (``0.5``, ``7.78``)
    is exact as written and must be equal.
    """
    if rules.approx_digits is None or not (m := _DECIMAL.fullmatch(compact(written))):
        return False
    digits = len(m[2])
    significant = len((m[1] + m[2]).lstrip("0"))
    if significant < rules.approx_digits:
        return False
    if isinstance(exact, Fraction):
        if (exact * 10 ** digits).denominator == 1:
            return False  # "0.50" against 0.5 was decided exactly; "0.55" is not 0.5
        value = Fraction(written.replace(" ", ""))
        return abs(value - exact) < Fraction(1, 10 ** digits)
    if not exact.is_number or exact.is_Rational and (exact * 10 ** digits).is_Integer:
        return False
    value = Fraction(compact(written))
    difference = sympy.N(exact - sympy.Rational(value.numerator, value.denominator), 30)
    return bool(difference.is_real and abs(difference) < sympy.Rational(1, 10 ** digits))


# ---- structure -----------------------------------------------------------------------------


def _split_top(s: str, separators: tuple[str, ...]) -> list[str]:
    """Split on separators that are not inside brackets."""
    parts, depth, start, i = [], 0, 0, 0
    while i < len(s):
        if s.startswith("\\{", i) or s[i] in "([{":
            depth += 1
            i += 2 if s.startswith("\\{", i) else 1
            continue
        if s.startswith("\\}", i) or s[i] in ")]}":
            depth -= 1
            i += 2 if s.startswith("\\}", i) else 1
            continue
        if depth == 0:
            sep = next((x for x in separators if s.startswith(x, i)), None)
            if sep:
                parts.append(s[start:i])
                i += len(sep)
                start = i
                continue
        i += 1
    parts.append(s[start:])
    return parts


def _container(s: str) -> tuple[str, str, list[str]] | None:
    """``(1,2]`` -> ("(", "]", ["1", "2"]); only when the brackets enclose the whole string."""
    for open_ in ("\\{", "(", "["):
        if not s.startswith(open_):
            continue
        for close in ("\\}", ")", "]"):
            if s.endswith(close) and len(s) > len(open_) + len(close):
                inner = s[len(open_):-len(close)]
                if _balanced(inner):
                    items = _split_top(inner, (",", ";"))
                    if len(items) > 1 or open_ == "\\{":
                        return open_, close, items
    return None


def _balanced(s: str) -> bool:
    depth = 0
    for ch in s.replace("\\{", "{").replace("\\}", "}"):
        depth += (ch in "([{") - (ch in ")]}")
        if depth < 0:
            return False
    return depth == 0


def _enclosed(s: str, open_: str, close: str) -> bool:
    """Do ``open_`` and ``close`` wrap all of ``s`` (not ``(1)+(2)``)?"""
    return s.startswith(open_) and s.endswith(close) and _balanced(s[len(open_):-len(close)])


_MATRIX = re.compile(r"\\begin\{([pbvBV]?matrix|array)\}(?:\{[^{}]*\})?(.*?)\\end\{\1\}", re.DOTALL)


def _matrix(s: str) -> list[list[str]] | None:
    s = s.strip()
    if (_enclosed(s, "(", ")") or _enclosed(s, "[", "]")) and s[1:-1].strip().startswith("\\begin"):
        s = s[1:-1].strip()  # Qwen's (\begin{pmatrix}...\end{pmatrix}); \left[\begin{array}...\right]
    m = _MATRIX.fullmatch(s)
    if m is None or "\\begin{" in m[2]:
        return None  # not one matrix literal: "A + B" is left to the parser
    return [row.split("&") for row in m[2].split("\\\\") if row.strip()]


def _matrix_values_match(p: str, g: str, rules: Rules) -> bool:
    try:
        a, b = parse(p), parse(g)
    except (ParseError, TypeError, ValueError, ZeroDivisionError, ArithmeticError, RecursionError):
        return False
    if not (isinstance(a, sympy.MatrixBase) and isinstance(b, sympy.MatrixBase)) or a.shape != b.shape:
        return False
    return all(_sympy_equal(x, y, rules.tolerance) for x, y in zip(a, b, strict=True))


def _ungroup(s: str) -> str:
    """``{1,2,3}`` -> ``1,2,3``: braces without a backslash only group."""
    while _enclosed(s, "{", "}"):
        s = s[1:-1].strip()
    return s


def _expand_pm(s: str) -> str:
    """``a \\pm b`` -> ``a+b, a-b``; ``\\pm b`` -> ``b, -b`` (one ``\\pm`` at the top level)."""
    if s.count("\\pm") != 1 or len(_split_top(s, ("\\pm",))) != 2:
        return s
    head, tail = (part.strip() for part in s.split("\\pm"))
    if not head:
        return f"{tail}, -({tail})"
    return f"{head}+({tail}), {head}-({tail})"


def _drop_approx(s: str) -> str:
    """``x = \\frac13 \\approx 0.33`` -> ``x = \\frac13``; ``x \\approx 11`` -> ``x = 11``."""
    if "\\approx" not in s:
        return s
    head, _, tail = s.partition("\\approx")
    return head if "=" in head else f"{head}={tail}"


def _items(s: str) -> list[str]:
    """The answers of a bare list: ``1, 3; 5``; ``p=5,q=2; p=7,q=2`` -> ``(5,2)``, ``(7,2)``."""
    groups = _split_top(s, (";",))
    if len(groups) > 1 and any(len(_split_top(g, (",",))) > 1 for g in groups):
        tuples = []
        for group in groups:
            values = [_unlabel(x) for x in _split_top(group, (",",))]
            tuples.append(f"({', '.join(values)})" if len(values) > 1 else values[0])
        return tuples
    return [x.strip() for x in _split_top(s, (",", ";")) if x.strip()]


def _structured_match(p: str, g: str, rules: Rules) -> bool:
    p, g = (_ungroup(_expand_pm(_drop_approx(x.strip()))) for x in (p, g))
    if compact(p) == compact(g):
        return True
    mp, mg = _matrix(p), _matrix(g)
    if mp is not None and mg is not None:
        return len(mp) == len(mg) and all(_ordered(rp, rg, rules) for rp, rg in zip(mp, mg, strict=True))
    if "\\begin{" in p or "\\begin{" in g:  # matrix arithmetic: "A + B", "I I"
        return _matrix_values_match(p, g, rules)
    items_p, items_g = _items(p), _items(g)
    if len(items_p) > 1 or len(items_g) > 1:
        return _lists_match(items_p, items_g, rules)
    return _single_match(p, g, rules)


def _lists_match(items_p: list[str], items_g: list[str], rules: Rules) -> bool:
    """Two answers at least one of which is a bare list of several."""
    if len(items_p) > 1 and len(items_g) > 1:
        return _unordered(_distinct(items_p), _distinct(items_g), rules)
    single, items = (items_g[0], items_p) if len(items_g) == 1 else (items_p[0], items_g)
    c = _container(_unlabel(single))
    if c is None or c[:2] == ("[", "]"):
        return False
    if c[0] == "\\{":
        return _unordered(_distinct(c[2]), _distinct(items), rules)
    return c[:2] == ("(", ")") and _ordered(c[2], items, rules)


def _distinct(items: list[str]) -> list[str]:
    seen, out = set(), []
    for x in items:
        if compact(x) not in seen:
            seen.add(compact(x))
            out.append(x)
    return out


def _single_match(p: str, g: str, rules: Rules) -> bool:
    rp, rg = _relation(p), _relation(g)
    if rp or rg:
        return _relations_match(p, g, rp, rg, rules)
    if "\\cup" in p or "\\cup" in g:
        return _unordered(_split_top(p, ("\\cup",)), _split_top(g, ("\\cup",)), rules)
    cp, cg = _container(p), _container(g)
    if cp or cg:
        if not (cp and cg) or (cp[0], cp[1]) != (cg[0], cg[1]):
            return False
        if cp[0] == "\\{":  # a set: order does not matter
            return _unordered(_distinct(cp[2]), _distinct(cg[2]), rules)
        return _ordered(cp[2], cg[2], rules)
    return _value_match(p, g, rules)


def _ordered(ps: list[str], gs: list[str], rules: Rules) -> bool:
    return len(ps) == len(gs) and all(_scalar_or_structure(a, b, rules)
                                      for a, b in zip(ps, gs, strict=True))


def _unordered(ps: list[str], gs: list[str], rules: Rules) -> bool:
    if len(ps) != len(gs):
        return False
    remaining = list(gs)
    for a in ps:
        hit = next((i for i, b in enumerate(remaining) if _scalar_or_structure(a, b, rules)), None)
        if hit is None:
            return False
        remaining.pop(hit)
    return True


def _scalar_or_structure(a: str, b: str, rules: Rules) -> bool:
    a, b = a.strip(), b.strip()
    return compact(a) == compact(b) or _structured_match(a, b, rules)


# ---- relations and labels -------------------------------------------------------------------

_RELATION_OP = re.compile(r"<=|>=|!=|<|>|=|\\in(?![a-zA-Z])")
_SUBSCRIPT = re.compile(r"_\{[^{}]*\}|_[A-Za-z0-9]")


class _Relation(NamedTuple):
    sides: list[str]  # n + 1 expressions
    ops: list[str]  # n operators between them


def _relation(s: str) -> _Relation | None:
    """The top-level relation of ``s``, or None. ``a = b = c`` is reduced to ``a = c``."""
    sides, ops, depth, start = [], [], 0, 0
    i = 0
    while i < len(s):
        ch = s[i]
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif depth == 0 and (m := _RELATION_OP.match(s, i)):
            sides.append(s[start:i].strip())
            ops.append(m.group().strip("\\"))
            i = start = m.end()
            continue
        i += 1
    if not ops:
        return None
    sides.append(s[start:].strip())
    if any(not x for x in sides):
        return None
    if set(ops) == {"="}:
        return _Relation([sides[0], sides[-1]], ["="])
    return _Relation(sides, ops)


def _is_label(s: str) -> bool:
    """A name: ``x``, ``(p,q)``, ``f(x)``, ``|AB|``, ``V_{1}:V_{2}``, ``\\frac{NO}{BO}``."""
    bare = _SUBSCRIPT.sub("", s)
    return (len(s) <= 40 and re.search(r"[a-zA-Z]", bare) is not None
            and not re.search(r"[\d+\-*^=<>!]|\\(?:cdot|times|div|sqrt|pi|infty)(?![a-zA-Z])", bare))


def _unlabel(s: str) -> str:
    """The value of ``label = value`` or ``label \\in value``; anything else unchanged."""
    r = _relation(s.strip())
    if r and len(r.ops) == 1 and r.ops[0] in ("=", "in") and _is_label(r.sides[0]):
        return r.sides[1]
    return s.strip()


_FLIP = {"<": ">", ">": "<", "<=": ">=", ">=": "<="}


def _as_set(r: _Relation) -> str | None:
    """The set an inequality on one label describes, as an interval: ``x > 5`` -> ``(5,\\infty)``."""
    if r.ops == ["in"] and _is_label(r.sides[0]):
        return r.sides[1]
    if len(r.ops) == 1 and r.ops[0] in _FLIP:
        (lhs, rhs), op = r.sides, r.ops[0]
        if _is_label(rhs) and not _is_label(lhs):
            lhs, rhs, op = rhs, lhs, _FLIP[op]
        if not _is_label(lhs) or _is_label(rhs):
            return None
        if op in ("<", "<="):
            return f"(-\\infty,{rhs}{')' if op == '<' else ']'}"
        return f"{'(' if op == '>' else '['}{rhs},\\infty)"
    if len(r.ops) == 2 and _is_label(r.sides[1]) and not _is_label(r.sides[0]):
        ops = r.ops if r.ops[0] in ("<", "<=") else [_FLIP.get(op, "") for op in reversed(r.ops)]
        low, high = (r.sides[0], r.sides[2]) if r.ops[0] in ("<", "<=") else (r.sides[2], r.sides[0])
        if all(op in ("<", "<=") for op in ops):
            return f"{'(' if ops[0] == '<' else '['}{low},{high}{')' if ops[1] == '<' else ']'}"
    return None


def _relations_match(p: str, g: str, rp: _Relation | None, rg: _Relation | None, rules: Rules) -> bool:
    if rp and rg:
        if len(rp.ops) == len(rg.ops) == 1 and _same_relation(rp, rg, rules):
            return True
        sp, sg = _as_set(rp), _as_set(rg)
        if sp is not None and sg is not None:
            return _structured_match(sp, sg, rules)
        if rp.ops == rg.ops == ["="]:  # labelled values: the same label, the same value
            (lp, vp), (lg, vg) = rp.sides, rg.sides
            return _scalar_or_structure(lp, lg, rules) and _scalar_or_structure(vp, vg, rules)
        return False
    r, other = (rp, g) if rp else (rg, p)
    if r.ops == ["="] and (_is_label(r.sides[0]) or all(_is_constant(x) for x in r.sides)):
        # "x = 5", "(p,q) = (3,2)", and a computation "5 \times 6 \times 4 = 120": the value
        return _scalar_or_structure(r.sides[1], other, rules)
    as_set = _as_set(r)
    return as_set is not None and _scalar_or_structure(as_set, other, rules)


def _is_constant(s: str) -> bool:
    try:
        return not parse(s).free_symbols
    except (ParseError, TypeError, ValueError, ZeroDivisionError, ArithmeticError, RecursionError):
        return False


def _same_relation(rp: _Relation, rg: _Relation, rules: Rules) -> bool:
    """One equation (inequality) a non-zero (positive) multiple of the other, ``>`` turned round."""
    (op_p,), (op_g,) = rp.ops, rg.ops
    if "in" in (op_p, op_g):
        return False

    def canonical(r: _Relation, op: str) -> tuple[str, sympy.Expr]:
        lhs, rhs = (parse(x) for x in r.sides)
        return (_FLIP[op], rhs - lhs) if op in (">", ">=") else (op, lhs - rhs)

    try:
        (op_p, dp), (op_g, dg) = canonical(rp, op_p), canonical(rg, op_g)
    except (ParseError, TypeError, ValueError, ZeroDivisionError, ArithmeticError, RecursionError):
        return False
    if op_p != op_g:
        return False
    return _proportional(dp, dg, positive=op_p in ("<", "<="))


def _proportional(a: sympy.Expr, b: sympy.Expr, positive: bool) -> bool:
    """``a == k * b`` for one constant k != 0 (k > 0 if ``positive``), by random evaluation."""
    symbols = sorted(a.free_symbols | b.free_symbols, key=lambda s: s.name)
    if not symbols:
        return False
    rng = random.Random(0)
    ratio, agreed = None, 0
    for _ in range(10):
        point = {s: sympy.Rational(rng.randint(-97, 97), rng.randint(1, 13)) for s in symbols}
        va, vb = complex(sympy.N(a.subs(point), 30)), complex(sympy.N(b.subs(point), 30))
        if abs(vb) < 1e-12:
            if abs(va) > 1e-9:
                return False
            continue
        k = va / vb
        if ratio is None:
            if abs(k) < 1e-12 or abs(k.imag) > 1e-9 or (positive and k.real <= 0):
                return False
            ratio = k
        elif abs(k - ratio) > 1e-9 * max(1.0, abs(ratio)):
            return False
        agreed += 1
        if agreed == 4:
            return True
    return False


# ---- scalars ------------------------------------------------------------------------------------


def _value_match(p: str, g: str, rules: Rules) -> bool:
    p, g = p.strip(), g.strip()
    if compact(p) == compact(g):
        return True
    a, b = _number(p), _number(g)
    if a is not None and b is not None:
        return _numbers_equal(a, b, p, g, rules)
    try:
        ep, eg = parse(p), parse(g)
    except (ParseError, TypeError, ValueError, ZeroDivisionError, ArithmeticError, RecursionError):
        return False
    if rules.tolerance is None and (_rounded_to(p, eg, rules) or _rounded_to(g, ep, rules)):
        return True
    return _sympy_equal(ep, eg, rules.tolerance)


def _sympy_equal(a: sympy.Expr, b: sympy.Expr, tolerance: float | None) -> bool:
    if a == b:
        return True
    symbols = sorted(a.free_symbols | b.free_symbols, key=lambda s: s.name)
    if not symbols:
        return _close(a, b, tolerance)
    # Identity testing at random rational points: equal polynomials/rational functions agree
    # everywhere; distinct ones almost never agree at several random points.
    rng = random.Random(0)
    agreed = 0
    for _ in range(8):
        point = {s: sympy.Rational(rng.randint(-97, 97), rng.randint(1, 13)) for s in symbols}
        va, vb = a.subs(point), b.subs(point)
        if not (va.is_finite and vb.is_finite):
            continue
        if not _close(va, vb, None):
            return False
        agreed += 1
        if agreed == 4:
            return True
    return False


def _close(a: sympy.Expr, b: sympy.Expr, tolerance: float | None) -> bool:
    if a.is_infinite or b.is_infinite:
        return a == b
    va, vb = complex(sympy.N(a, 30)), complex(sympy.N(b, 30))
    scale = max(abs(va), abs(vb))
    if abs(va - vb) <= max(tolerance or 0.0, REL_TOL * scale):
        return True
    # Relative, not absolute: 3.3e-10 and -(3.3e-10) differ. Near 0, thirty digits cannot tell a
    # tiny value from the rounding error of an exact 0 (\sin(\pi) - 0); sixty can.
    if tolerance is None and scale < 1e-20:
        return abs(complex(sympy.N(a - b, 60))) < 1e-50
    return False
