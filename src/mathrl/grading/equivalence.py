"""Deciding whether a predicted final answer equals the gold answer.

Order of checks, cheapest first: equal after string normalisation; equal as exact rationals
(integers with commas, leading zeros, decimals, fractions, scientific notation); then, under a
time bound, structure (tuples and intervals in order with matching brackets, sets and bare
multiple answers in any order, matrices, unions of intervals, ``x = 5`` against ``5``) and
symbolic equality on expression trees from the safe parser (``grading.parse``): exact for
constants, by evaluation at random points for expressions with variables.
"""

from __future__ import annotations

import random
import re
from fractions import Fraction

import sympy

from mathrl.grading.bounded import call_bounded
from mathrl.grading.normalize import compact, normalize
from mathrl.grading.parse import ParseError, parse

DEFAULT_TIMEOUT_S = 2.0
MAX_ANSWER_CHARS = 1000  # longer "answers" are compared as normalised strings only
REL_TOL = 1e-9  # float noise when comparing evaluated constants

_PLAIN_NUMBER = re.compile(r"[+-]?(\d{1,3}(,\d{3})+|\d+)(\.\d*)?([eE][-+]?\d+)?|[+-]?\.\d+")
_FRAC_NUMBER = re.compile(r"([+-]?)\\frac\{([+-]?\d+)\}\{([+-]?\d+)\}|([+-]?\d+)/(\d+)")


def parse_number(answer: str) -> Fraction | None:
    """An exact rational for a plain number: signs, thousands commas, leading zeros, decimals,
    scientific notation, ``a/b`` and ``\\frac{a}{b}`` with integer parts; else None.

    >>> parse_number("1,000"), parse_number("025"), parse_number("\\\\frac{-3}{6}")
    (Fraction(1000, 1), Fraction(25, 1), Fraction(-1, 2))
    """
    return _number(normalize(answer))


def _number(s: str) -> Fraction | None:
    """:func:`parse_number` of an already normalised string."""
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


def answers_match(pred: str | None, gold: str, tolerance: float | None = None,
                  timeout: float = DEFAULT_TIMEOUT_S) -> bool:
    """True when ``pred`` and ``gold`` are the same answer. Never raises; bounded by ``timeout``.

    ``tolerance`` is an absolute numeric tolerance (OlympiadBench's ``error`` field).

    >>> answers_match("1,000", "1000"), answers_match("\\\\dfrac{1}{2}", "0.5"), answers_match("3", "4")
    (True, True, False)
    """
    if pred is None or gold is None:
        return False
    try:
        if len(pred) > MAX_ANSWER_CHARS or len(gold) > MAX_ANSWER_CHARS:
            return pred.strip() == gold.strip()
        p, g = normalize(pred), normalize(gold)
        if not p:
            return False
        if compact(p) == compact(g):
            return True
        a, b = _number(p), _number(g)
        if a is not None and b is not None:
            return _numbers_equal(a, b, tolerance)
        return bool(call_bounded(_structured_match, (p, g, tolerance), timeout, False))
    except Exception:
        return False


def _numbers_equal(a: Fraction, b: Fraction, tolerance: float | None) -> bool:
    if tolerance:
        return abs(a - b) <= Fraction(tolerance)
    return a == b


# ---- structure -----------------------------------------------------------------------------

_OPEN = {"(": ")", "[": "]", "\\{": "\\}", "{": "}"}


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
                    items = _split_top(inner, (",",))
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


def _matrix(s: str) -> list[list[str]] | None:
    m = re.fullmatch(r"\\begin\{[pbvB]?matrix\}(.*)\\end\{[pbvB]?matrix\}", s.strip(), re.DOTALL)
    if m is None:
        return None
    return [row.split("&") for row in m[1].split("\\\\") if row]


def _structured_match(p: str, g: str, tolerance: float | None) -> bool:
    p, g = p.strip(), g.strip()
    mp, mg = _matrix(p), _matrix(g)
    if mp is not None or mg is not None:
        return (mp is not None and mg is not None and len(mp) == len(mg)
                and all(_ordered(rp, rg, tolerance) for rp, rg in zip(mp, mg, strict=True)))
    if "\\cup" in p or "\\cup" in g:
        return _unordered(_split_top(p, ("\\cup",)), _split_top(g, ("\\cup",)), tolerance)
    cp, cg = _container(p), _container(g)
    if cp or cg:
        if not (cp and cg) or (cp[0], cp[1]) != (cg[0], cg[1]):
            return False
        if cp[0] == "\\{":  # a set: order does not matter
            return _unordered(cp[2], cg[2], tolerance)
        return _ordered(cp[2], cg[2], tolerance)
    parts_p, parts_g = _split_top(p, (",", ";")), _split_top(g, (",", ";"))
    if len(parts_p) > 1 or len(parts_g) > 1:  # bare multiple answers: "1, 3, 5"
        return _unordered(parts_p, parts_g, tolerance)
    return _scalar_match(p, g, tolerance)


def _ordered(ps: list[str], gs: list[str], tolerance: float | None) -> bool:
    return len(ps) == len(gs) and all(_scalar_or_structure(a, b, tolerance)
                                      for a, b in zip(ps, gs, strict=True))


def _unordered(ps: list[str], gs: list[str], tolerance: float | None) -> bool:
    if len(ps) != len(gs):
        return False
    remaining = list(gs)
    for a in ps:
        hit = next((i for i, b in enumerate(remaining) if _scalar_or_structure(a, b, tolerance)), None)
        if hit is None:
            return False
        remaining.pop(hit)
    return True


def _scalar_or_structure(a: str, b: str, tolerance: float | None) -> bool:
    a, b = a.strip(), b.strip()
    return compact(a) == compact(b) or _structured_match(a, b, tolerance)


# ---- scalars and equations ------------------------------------------------------------------

_LHS_VARIABLE = re.compile(r"\s*([a-zA-Z](_\{?\w+\}?)?|\\[a-zA-Z]+)\s*")


def _scalar_match(p: str, g: str, tolerance: float | None) -> bool:
    sides_p, sides_g = _equation(p), _equation(g)
    if len(sides_p) == 2 and len(sides_g) == 2:  # both equations: same sides, either way round
        (lp, rp), (lg, rg) = sides_p, sides_g
        return ((_value_match(lp, lg, tolerance) and _value_match(rp, rg, tolerance))
                or (_value_match(lp, rg, tolerance) and _value_match(rp, lg, tolerance)))
    # "x = 5" against "5": compare the value. Only a bare variable on the left counts.
    if len(sides_p) == 2 and _LHS_VARIABLE.fullmatch(sides_p[0]):
        p = sides_p[1]
    if len(sides_g) == 2 and _LHS_VARIABLE.fullmatch(sides_g[0]):
        g = sides_g[1]
    return _value_match(p, g, tolerance)


def _equation(s: str) -> list[str]:
    if "=" not in s or any(op in s for op in ("<=", ">=", "\\le", "\\ge", "\\neq")):
        return [s]
    return s.split("=")[-2:] if s.count("=") > 1 else s.split("=")


def _value_match(p: str, g: str, tolerance: float | None) -> bool:
    p, g = p.strip(), g.strip()
    if compact(p) == compact(g):
        return True
    a, b = _number(p), _number(g)
    if a is not None and b is not None:
        return _numbers_equal(a, b, tolerance)
    try:
        return _sympy_equal(parse(p), parse(g), tolerance)
    except (ParseError, TypeError, ValueError, ZeroDivisionError, ArithmeticError, RecursionError):
        return False


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
    bound = max(tolerance or 0.0, REL_TOL * max(1.0, abs(vb)))
    return abs(va - vb) <= bound
