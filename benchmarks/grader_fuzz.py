"""Differential fuzzing of the grader against math-verify, on pairs whose truth is known by construction.

    python benchmarks/grader_fuzz.py [--pairs 100000] [--seed 0] [--data-dir ../shared/data] [--json OUT]

From the gold answers of every benchmark in the data folder, it writes (response, gold, truth)
triples: a gold rewritten as a model might write the same answer (equal), or changed the way a
model gets it slightly wrong (a near miss). Every rewrite is made from a gold this script has
read into a known shape itself (a number, a surd, a tuple, a list of roots, an interval, an
equation) or is a LaTeX-only respelling, so its truth does not depend on either grader. Each pair
is graded by mathrl (``mathrl.grading.grade``, the eval's and the reward's call) and by math-verify
0.9 (``verify(parse(gold), parse(response))``, its documented use) in the same run, and the
script prints false positives (a near miss graded equal) and false negatives (an equal answer
graded wrong) of each, kind by kind, with examples, and each grader's speed.

Kinds. Equal: ``fraction_decimal_percent`` (3/4, 0.75, .75; 75 or 75% for a gold of 75\\%, and
75\\% for 75 where the question asks for a percent), ``thousands`` (12,500 and 12{,}500 and
12\\,500), ``latex_spelling`` (\\dfrac, \\frac12, \\sqrt2, \\left( \\right), ^{2}, \\leq, spacing),
``reordered`` (the roots of an "enter all" list or a set, in another order), ``interval`` (the
same interval or union spelled otherwise),
``equation`` (x = 5 for 5, 5 for x = 5, sides swapped), ``units_text`` (5 \\text{ cm}, \\$5,
5^\\circ), ``boxed_in_prose`` (the box inside a sentence, display math, after a discarded box).
Near misses: ``digit_off``, ``sign``, ``swapped_tuple``, ``interval_end`` (another bracket or
endpoint), ``wrong_root`` (a root replaced, dropped or added).

Seeded and repeatable: the same seed and data give the same pairs (tests/test_grader_fuzz.py
grades 2,000 of them with both graders).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

EQUAL_KINDS = ("fraction_decimal_percent", "thousands", "latex_spelling", "reordered", "interval", "equation",
               "units_text", "boxed_in_prose")
NEAR_MISS_KINDS = ("digit_off", "sign", "swapped_tuple", "interval_end", "wrong_root")
KINDS = EQUAL_KINDS + NEAR_MISS_KINDS


@dataclass(frozen=True)
class Pair:
    """One graded case: ``response`` against ``gold``; ``equal`` is the truth by construction."""

    kind: str
    response: str
    gold: str
    equal: bool
    source: str


@dataclass(frozen=True)
class Gold:
    text: str  # the gold as the dataset has it, outer $...$ removed
    problem: str
    source: str


def read_golds(data_dir: Path) -> list[Gold]:
    """Every distinct (gold, problem) of every benchmark file in ``data_dir`` (the labelled
    grader cases are not a benchmark), in file order."""
    seen, golds = set(), []
    for path in sorted(data_dir.glob("*.jsonl")):
        if path.name == "grader_cases.jsonl":
            continue
        for line in path.open():
            row = json.loads(line)
            answer = row.get("answer")
            if not answer or not answer.strip():
                continue
            text = answer.strip()
            if re.fullmatch(r"\$[^$]+\$", text):
                text = text[1:-1].strip()
            if (text, row["problem"]) not in seen:
                seen.add((text, row["problem"]))
                golds.append(Gold(text, row["problem"], path.stem))
    return golds


# --- numbers: read, respelled, changed ----------------------------------------------------------

_INT = r"-?(?:0|[1-9]\d*)"
_DEC = r"-?(?:0|[1-9]\d*)?\.\d+"
_FRAC = r"-?\\[dt]?frac\{\d+\}\{[1-9]\d*\}|-?\d+/[1-9]\d*"
NUMBER = rf"(?:{_FRAC}|{_DEC}|{_INT})"


def number_value(text: str) -> Fraction | None:
    """The exact value of a plain number (integer, decimal, fraction), or None."""
    text = text.strip()
    if not re.fullmatch(NUMBER, text):
        return None
    match = re.fullmatch(r"(-?)\\[dt]?frac\{(\d+)\}\{(\d+)\}", text)
    if match:
        return Fraction(int(match[2]), int(match[3])) * (-1 if match[1] else 1)
    if "/" in text:
        numerator, denominator = text.split("/")
        return Fraction(int(numerator), int(denominator))
    return Fraction(text)


def _terminates(value: Fraction) -> bool:
    d = value.denominator
    for p in (2, 5):
        while d % p == 0:
            d //= p
    return d == 1


def _decimal(value: Fraction) -> str:
    """The exact decimal of a terminating fraction, shortest form."""
    sign, value = ("-" if value < 0 else ""), abs(value)
    digits = 0
    while (value * 10 ** digits).denominator != 1:
        digits += 1
    whole = value * 10 ** digits
    text = str(whole.numerator).rjust(digits + 1, "0")
    return sign + (f"{text[:-digits]}.{text[-digits:]}" if digits else text)


def spellings(value: Fraction) -> list[str]:
    """Ways a model writes ``value`` exactly."""
    out = []
    sign, magnitude = ("-" if value < 0 else ""), abs(value)
    if magnitude.denominator == 1:
        out += [f"{value.numerator}.0", f"{value.numerator}.00"]
    else:
        p, q = magnitude.numerator, magnitude.denominator
        out += [f"{sign}\\frac{{{p}}}{{{q}}}", f"{sign}\\dfrac{{{p}}}{{{q}}}", f"{sign}{p}/{q}",
                f"\\frac{{{sign}{p}}}{{{q}}}", f"{sign}\\frac{{{2 * p}}}{{{2 * q}}}"]
    if _terminates(value):
        out.append(_decimal(value))
        if magnitude.denominator != 1:
            out.append(_decimal(value) + "0")
        if 0 < magnitude < 1:
            out.append(sign + _decimal(magnitude).removeprefix("0"))  # .75
    return out


def _change_a_digit(text: str, rng: random.Random) -> str | None:
    """``text`` with one digit changed (never a leading zero made, never a denominator of 0)."""
    positions = [i for i, c in enumerate(text) if c.isdigit()]
    rng.shuffle(positions)
    for i in positions:
        leading = (i == 0 or not text[i - 1].isdigit() and text[i - 1] != ".") and \
            i + 1 < len(text) and text[i + 1].isdigit()
        choices = [d for d in "0123456789" if d != text[i] and not (leading and d == "0")]
        changed = text[:i] + rng.choice(choices) + text[i + 1:]
        if number_value(changed) is None and number_value(text) is not None:
            continue  # a denominator of 0 or a malformed number
        return changed
    return None


def negated(text: str) -> str:
    return text[1:].lstrip() if text.startswith("-") else f"-{text}"


# --- surds and multiples of pi: c*sqrt(r) and c*pi, compared exactly -----------------------------

_SURD = re.compile(r"(-?)(\d*)\s*\\sqrt\{(\d+)\}|(-?)\\frac\{(\d*)\s*\\sqrt\{(\d+)\}\}\{([1-9]\d*)\}")
_PI = re.compile(r"(-?)(\d*)\s*\\pi|(-?)\\frac\{(\d*)\s*\\pi\}\{([1-9]\d*)\}")


def surd_value(text: str) -> tuple[Fraction, int | str] | None:
    """("sqrt", c^2 r with c's sign) for c*sqrt(r), ("pi", c) for c*pi; None otherwise."""
    match = _SURD.fullmatch(text.strip())
    if match:
        if match[3] is not None:
            c, r = Fraction(int(match[2] or 1)) * (-1 if match[1] else 1), int(match[3])
        else:
            c, r = Fraction(int(match[5] or 1), int(match[7])) * (-1 if match[4] else 1), int(match[6])
        if r == 0:
            return None
        square = c * c * r
        root = Fraction(math.isqrt(square.numerator), math.isqrt(square.denominator))
        if root * root == square:  # \sqrt{4}, 2\sqrt{1}: a number
            return "number", root if c >= 0 else -root
        return "sqrt", square if c >= 0 else -square
    match = _PI.fullmatch(text.strip())
    if match:
        if match[2] is not None:
            c = Fraction(int(match[2] or 1)) * (-1 if match[1] else 1)
        else:
            c = Fraction(int(match[4] or 1), int(match[5])) * (-1 if match[3] else 1)
        return ("pi", c) if c != 0 else ("number", c)
    return None


def scalar_value(text: str):
    """A comparable exact value of a number, a surd or a multiple of pi; None for anything else."""
    value = number_value(text)
    return ("number", value) if value is not None else surd_value(text)


def digit_off_scalar(text: str, rng: random.Random) -> str | None:
    value = scalar_value(text)
    if value is None:
        return None
    for _ in range(8):
        changed = _change_a_digit(text, rng)
        if changed is not None and scalar_value(changed) is not None and scalar_value(changed) != value:
            return changed
    return None


def is_zero(text: str) -> bool:
    value = scalar_value(text)
    return value is not None and value[1] == 0


# --- structures: tuples, lists of roots, sets, intervals -----------------------------------------

def split_top(text: str, separator: str = ",") -> list[str]:
    """``text`` split at ``separator`` outside braces, brackets and parentheses."""
    depth, start, parts = 0, 0, []
    for i, c in enumerate(text):
        if c in "{[(":
            depth += 1
        elif c in "}])":
            depth -= 1
        elif c == separator and depth == 0 and text[i - 1] != "\\":
            parts.append(text[start:i].strip())
            start = i + 1
    parts.append(text[start:].strip())
    return parts


def _is_thousands(items: list[str]) -> bool:
    return len(items) >= 2 and re.fullmatch(r"-?\d{1,3}", items[0]) is not None and \
        all(re.fullmatch(r"\d{3}", i) for i in items[1:])


def tuple_items(text: str) -> list[str] | None:
    """The scalars of an ordered tuple ``(a, b, ...)``, or None."""
    if not (text.startswith("(") and text.endswith(")")) or text.startswith("(-\\infty") or "\\infty" in text:
        return None
    items = split_top(text[1:-1])
    if len(items) >= 2 and all(scalar_value(i) is not None for i in items):
        return items
    return None


# A problem asking for every root, in any order: its bare comma list is a set (unless it asks for an order).
_ALL_OF = re.compile(r"separated by commas|all (?:the |possible |real |complex |integer )*"
                     r"(?:solutions|roots|values|zeros|numbers)", re.I)
_IN_ORDER = re.compile(r"(?:increasing|decreasing|ascending|descending) order", re.I)


def root_items(gold: Gold) -> tuple[str, list[str], str] | None:
    """(opening, items, closing) for a list of roots in any order: ``\\{a, b\\}``, or a bare
    ``a, b`` when the problem asks for all of them; None otherwise."""
    text = gold.text
    if text.startswith("\\{") and text.endswith("\\}"):
        opening, inner, closing = "\\{", text[2:-2], "\\}"
    elif _ALL_OF.search(gold.problem) and not _IN_ORDER.search(gold.problem) and \
            not text.startswith(("(", "[")):
        opening, inner, closing = "", text, ""
    else:
        return None
    items = split_top(inner)
    if len(items) < 2 or _is_thousands(items) or not all(scalar_value(i) is not None for i in items):
        return None
    if len({scalar_value(i) for i in items}) != len(items):
        return None
    return opening, items, closing


_END = rf"(?:{NUMBER}|-?\d*\\sqrt\{{\d+\}}|-\\infty|\\infty|\+\\infty)"
_INTERVAL = re.compile(rf"(\[|\()\s*({_END})\s*,\s*({_END})\s*(\]|\))")


def interval_parts(text: str) -> list[tuple[str, str, str, str]] | None:
    """The intervals of ``(a, b]``, ``[a, \\infty)``, or their union, as (open, a, b, close); None
    for anything else, and for a lone ``(a, b)`` (a point as much as an interval)."""
    parts = [p.strip() for p in text.split("\\cup")]
    found = []
    for part in parts:
        match = _INTERVAL.fullmatch(part)
        if match is None:
            return None
        found.append(match.groups())
    if len(found) == 1 and found[0][0] == "(" and found[0][3] == ")" and "infty" not in text:
        return None
    return found


def interval_text(parts, left: bool = False, space: str = " ") -> str:
    spelled = []
    for opening, a, b, closing in parts:
        if left:
            spelled.append(f"\\left{opening}{a},{space}{b}\\right{closing}")
        else:
            spelled.append(f"{opening}{a},{space}{b}{closing}")
    return " \\cup ".join(spelled)


# --- the rewrites, kind by kind; each returns the answer text or None where it does not apply ----

def fraction_decimal_percent(gold: Gold, rng: random.Random) -> str | None:
    text = gold.text
    percent = re.fullmatch(rf"({NUMBER})\s*\\%", text)
    if percent:
        return rng.choice([percent[1], f"{percent[1]}%", f"{percent[1]} \\%", f"{percent[1]}\\text{{\\%}}",
                           f"{percent[1]} \\text{{ percent}}"])
    value = number_value(text)
    if value is None:
        return None
    if re.search(r"\bpercent\b", gold.problem) and rng.random() < 0.5:
        return rng.choice([f"{text}\\%", f"{text}%"])
    options = [s for s in spellings(value) if s != text]
    return rng.choice(options) if options else None


def thousands(gold: Gold, rng: random.Random) -> str | None:
    if not re.fullmatch(r"-?[1-9]\d{3,}", gold.text):
        return None
    sign, digits = ("-" if gold.text.startswith("-") else ""), gold.text.lstrip("-")
    groups = []
    while digits:
        groups.insert(0, digits[-3:])
        digits = digits[:-3]
    return sign + rng.choice([",", "{,}", "\\,", "\\ "]).join(groups)


def _sub(pattern: str, fn):
    """A spelling rule: every match of ``pattern`` replaced by ``fn(match, rng)``."""
    return lambda text, rng: re.sub(pattern, lambda m: fn(m, rng), text)


_OPEN, _CLOSE = r"(?<!\\left)(?<!\\right)(?<!\\)\((?!\))", r"(?<!\\left)(?<!\\right)(?<!\\)\)"
_SPELLINGS = [
    _sub(r"\\frac(?=\{)", lambda m, rng: rng.choice(["\\dfrac", "\\tfrac"])),
    _sub(r"\\[dt]frac(?=\{)", lambda m, rng: "\\frac"),
    _sub(r"\\frac\{(\d)\}\{(\d)\}", lambda m, rng: f"\\frac{m[1]}{m[2]}"),
    _sub(r"\\sqrt\{(\d)\}", lambda m, rng: f"\\sqrt{m[1]}"),
    _sub(r"\^\{(\w)\}", lambda m, rng: f"^{m[1]}"),
    _sub(r"\^(\d)(?!\d)", lambda m, rng: f"^{{{m[1]}}}"),
    _sub(r"\\(le|ge)(?![a-zA-Z])", lambda m, rng: f"\\{m[1]}q"),
    _sub(r"\\(le|ge)q(?![a-zA-Z])", lambda m, rng: f"\\{m[1]}"),
    _sub(r"\^\\circ", lambda m, rng: rng.choice(["^{\\circ}", "°"])),
    _sub(r"\\cdot(?![a-zA-Z])", lambda m, rng: "\\times"),
    _sub(r"(\d)\s*\\sqrt", lambda m, rng: f"{m[1]}\\,\\sqrt"),
    _sub(r"\s*([+=<>]|\\cup)\s*", lambda m, rng: rng.choice([m[1], f" {m[1]} "])),
    _sub(r",\s*", lambda m, rng: rng.choice([",", ", ", ",\\ ", ",\\, "])),
    # Parentheses sized, every pair at once (not where one closes a half-open interval).
    lambda text, rng: text if re.search(r"[][]", text) or text.count("(") != text.count(")") else
    re.sub(_CLOSE, r"\\right)", re.sub(_OPEN, r"\\left(", text)),
    lambda text, rng: text.replace("\\left(", "(").replace("\\right)", ")"),
]


def latex_spelling(gold: Gold, rng: random.Random) -> str | None:
    text = gold.text
    if re.search(r"\\(text|mbox|mathrm|operatorname)|\\\\|&|\\begin|\d,\d{3}(?!\d)|\{,\}|,\\!|\$", text) or \
            re.search(r"(?<![\\a-zA-Z])[a-zA-Z]{3,}", text):
        return None  # prose, matrices, arrays and 1,000: spacing and commas there are not only spelling
    probe = random.Random(0)  # a rule whose every choice leaves the text as it is does not apply
    rules = [rule for rule in _SPELLINGS if any(rule(text, probe) != text for _ in range(2))]
    rng.shuffle(rules)
    out = text
    for rule in rules[:rng.randint(1, 3)]:
        out = rule(out, rng)
    return out if out != text else None


def reordered(gold: Gold, rng: random.Random) -> str | None:
    found = root_items(gold)
    if found is None:
        return None
    opening, items, closing = found
    shuffled = items[:]
    while shuffled == items:
        rng.shuffle(shuffled)
    return opening + rng.choice([", ", ","]).join(shuffled) + closing


def interval(gold: Gold, rng: random.Random) -> str | None:
    parts = interval_parts(gold.text)
    if parts is None:
        return None
    respelled = []
    for opening, a, b, closing in parts:
        a, b = (rng.choice([s for s in spellings(number_value(x))] or [x]) if number_value(x) is not None
                and rng.random() < 0.5 else x for x in (a, b))
        b = "+\\infty" if b == "\\infty" and rng.random() < 0.3 else b
        respelled.append((opening, a, b, closing))
    if len(respelled) > 1 and rng.random() < 0.5:
        rng.shuffle(respelled)  # a union in another order is the same set
    out = interval_text(respelled, left=rng.random() < 0.5, space=rng.choice(["", " "]))
    return out if out != gold.text else interval_text(respelled, left=True)


def equation(gold: Gold, rng: random.Random) -> str | None:
    text = gold.text
    match = re.fullmatch(rf"([a-zA-Z])\s*=\s*({NUMBER})", text)
    if match:
        return rng.choice([match[2], f"{match[2]} = {match[1]}"])
    if number_value(text) is not None:
        variable = re.search(r"\$([a-z])\$", gold.problem)
        if variable and re.search(rf"(value|find|solve|what is)[^.?]*\${variable[1]}\$", gold.problem, re.I):
            return f"{variable[1]} = {text}"
        return None
    sides = text.split("=")
    if len(sides) == 2 and re.fullmatch(r"\s*[a-zA-Z]\s*", sides[0]) and "," not in text and \
            not re.search(r"[<>]|\\[lg]e|\\text|\\\\", text) and sides[1].strip():
        return f"{sides[1].strip()} = {sides[0].strip()}"
    return None


_UNITS = ["cm", "meters", "units", "square feet", "apples", "minutes", "hours", "km", "inches"]


def units_text(gold: Gold, rng: random.Random) -> str | None:
    text = gold.text
    if not re.fullmatch(rf"{_INT}|{_DEC}", text):
        return None
    options = [f"{text}\\text{{ {rng.choice(_UNITS)}}}", f"{text} \\text{{{rng.choice(_UNITS)}}}",
               f"{text}\\ \\mbox{{{rng.choice(_UNITS)}}}", f"{text}\\text{{ units}}"]
    if "$" in gold.problem and re.search(r"dollar|\\\$|cost|price|earn|pay", gold.problem, re.I):
        options += [f"\\${text}", f"\\$ {text}", f"{text} \\text{{ dollars}}"]
    if "degree" in gold.problem or "^\\circ" in gold.problem:
        options += [f"{text}^\\circ", f"{text}^{{\\circ}}", f"{text} \\text{{ degrees}}"]
    return rng.choice(options)


_PROSE = [
    "We simplify step by step, checking each line. Therefore the answer is \\boxed{{{a}}} as required.",
    "Putting it together, $x = \\boxed{{{a}}}$, which completes the solution.",
    "**Final Answer**\n\\[\n\\boxed{{{a}}}\n\\]",
    "A first attempt gave $\\boxed{{{w}}}$, but that missed a case. Redoing the count, "
    "the final answer is $\\boxed{{{a}}}$.",
    "The answer is $\\boxed{{{a}}}$. We can check it by substituting back into the equation.",
    "So we get\n$$\\boxed{{{a}}}$$\nand we are done.",
    "Hence the value is \\(\\boxed{{{a}}}\\).",
]


def digit_off(gold: Gold, rng: random.Random) -> str | None:
    text = gold.text
    percent = re.fullmatch(rf"({NUMBER})\s*\\%", text)
    if percent:
        changed = digit_off_scalar(percent[1], rng)
        return f"{changed}\\%" if changed else None
    if scalar_value(text) is not None:
        return digit_off_scalar(text, rng)
    items = tuple_items(text)
    if items:
        i = rng.randrange(len(items))
        changed = digit_off_scalar(items[i], rng)
        return "(" + ", ".join(items[:i] + [changed] + items[i + 1:]) + ")" if changed else None
    return None


def sign(gold: Gold, rng: random.Random) -> str | None:
    text = gold.text
    if scalar_value(text) is not None:
        return None if is_zero(text) else negated(text)
    items = tuple_items(text)
    if items:
        nonzero = [i for i, item in enumerate(items) if not is_zero(item)]
        if not nonzero:
            return None
        i = rng.choice(nonzero)
        return "(" + ", ".join(items[:i] + [negated(items[i])] + items[i + 1:]) + ")"
    if _is_expression(text):  # -(e) is e only where e is identically 0, and no such gold has a letter
        return rng.choice([f"-\\left({text}\\right)", f"-({text})"])
    return None


def _is_expression(text: str) -> bool:
    """One algebraic expression with a variable in it: no relation, list, text, matrix or +-."""
    return re.search(r"[a-zA-Z]", re.sub(r"\\[a-zA-Z]+", "", text)) is not None and \
        re.search(r"[=<>,;:!%$&]|\\(text|mbox|mathrm|begin|pm|mp|le|ge|leq|geq|neq|cup|cap|in|circ|quad|infty)"
                  r"(?![a-zA-Z])|\\\\|\.\.\.|\\ldots|(?<![\\a-zA-Z])[a-zA-Z]{3,}", text) is None


def swapped_tuple(gold: Gold, rng: random.Random) -> str | None:
    items = tuple_items(gold.text)
    if not items:
        return None
    pairs = [(i, j) for i in range(len(items)) for j in range(i + 1, len(items))
             if scalar_value(items[i]) != scalar_value(items[j])]
    if not pairs:
        return None
    i, j = rng.choice(pairs)
    swapped = items[:]
    swapped[i], swapped[j] = swapped[j], swapped[i]
    return "(" + ", ".join(swapped) + ")"


def interval_end(gold: Gold, rng: random.Random) -> str | None:
    parts = interval_parts(gold.text)
    if parts is None:
        return None
    k = rng.randrange(len(parts))
    opening, a, b, closing = parts[k]
    finite = [side for side, x in (("a", a), ("b", b)) if "infty" not in x]
    if not finite:
        return None
    side = rng.choice(finite)
    if rng.random() < 0.5:  # the other bracket at a finite end
        if side == "a":
            opening = "(" if opening == "[" else "["
        else:
            closing = ")" if closing == "]" else "]"
    else:
        changed = digit_off_scalar(a if side == "a" else b, rng)
        if changed is None:
            return None
        a, b = (changed, b) if side == "a" else (a, changed)
    changed_parts = parts[:k] + [(opening, a, b, closing)] + parts[k + 1:]
    if len(changed_parts) == 1 and opening == "(" and closing == ")" and "infty" not in a + b:
        return None  # now reads as a point as much as an interval
    return interval_text(changed_parts)


def wrong_root(gold: Gold, rng: random.Random) -> str | None:
    found = root_items(gold)
    if found is None:
        return None
    opening, items, closing = found
    values = {scalar_value(i) for i in items}
    how = rng.choice(["replace", "drop", "add"])
    if how == "drop":
        i = rng.randrange(len(items))
        out = items[:i] + items[i + 1:]
    else:
        changed = None
        for _ in range(6):
            candidate = digit_off_scalar(rng.choice(items), rng)
            if candidate is not None and scalar_value(candidate) not in values:
                changed = candidate
                break
        if changed is None:
            return None
        if how == "replace":
            i = rng.randrange(len(items))
            out = items[:i] + [changed] + items[i + 1:]
        else:
            out = items + [changed]
    return opening + ", ".join(out) + closing


REWRITES = {"fraction_decimal_percent": fraction_decimal_percent, "thousands": thousands,
            "latex_spelling": latex_spelling, "reordered": reordered, "interval": interval,
            "equation": equation, "units_text": units_text, "boxed_in_prose": lambda gold, rng: gold.text,
            "digit_off": digit_off, "sign": sign,
            "swapped_tuple": swapped_tuple, "interval_end": interval_end, "wrong_root": wrong_root}

_PLAIN = [
    "The final answer is $\\boxed{{{a}}}$.",
    "Therefore, the answer is $\\boxed{{{a}}}$.",
    "Thus the answer is \\boxed{{{a}}}.",
    "\\[\n\\boxed{{{a}}}\n\\]",
]


def respond(kind: str, answer: str, rng: random.Random) -> str:
    """A response that gives ``answer`` as its final answer."""
    if kind != "boxed_in_prose":
        return rng.choice(_PLAIN).format(a=answer)
    return rng.choice(_PROSE).format(a=answer, w=rng.choice(["7", "12", "\\frac{1}{3}", "0"]))


def eligible(golds: list[Gold]) -> dict[str, list[Gold]]:
    """For each kind, the golds its rewrite applies to (tried with a fixed seed)."""
    out = {}
    for kind, fn in REWRITES.items():
        rng = random.Random(0)
        out[kind] = [g for g in golds if any(fn(g, rng) is not None for _ in range(3))]
    return out


def make_pairs(golds: list[Gold], count: int, seed: int = 0,
               pools: dict[str, list[Gold]] | None = None) -> list[Pair]:
    """``count`` pairs, the same number of each kind (as near as divides), seeded; ``pools`` is
    ``eligible(golds)``, computed here if not given."""
    pools = pools or eligible(golds)
    rng = random.Random(seed)
    pairs = []
    for k, kind in enumerate(KINDS):
        share = count // len(KINDS) + (1 if k < count % len(KINDS) else 0)
        made = 0
        while made < share:
            gold = rng.choice(pools[kind])
            answer = REWRITES[kind](gold, rng)
            if answer is None:
                continue
            pairs.append(Pair(kind, respond(kind, answer, rng), gold.text, kind in EQUAL_KINDS, gold.source))
            made += 1
    return pairs


# --- the two graders -----------------------------------------------------------------------------

def grade_mathrl(pairs: list[Pair]) -> list[bool]:
    from mathrl.grading import grade

    return [grade(p.response, p.gold) for p in pairs]


def grade_math_verify(pairs: list[Pair]) -> list[bool]:
    from math_verify import parse, verify

    return [bool(verify(parse(f"${p.gold}$"), parse(p.response))) for p in pairs]


def tally(pairs: list[Pair], verdicts: list[bool]) -> dict[str, dict[str, int]]:
    """Per kind: pairs, false positives (graded equal, truth unequal), false negatives."""
    out = defaultdict(Counter)
    for p, v in zip(pairs, verdicts, strict=True):
        out[p.kind]["pairs"] += 1
        out[p.kind]["fp"] += int(v and not p.equal)
        out[p.kind]["fn"] += int(p.equal and not v)
    return {k: dict(out[k]) for k in KINDS if k in out}


def _timed_chunk(job: tuple[str, list[Pair]]) -> tuple[list[bool], float]:
    name, pairs = job
    fn = GRADERS[name]
    fn(pairs[:5])  # imports and caches
    start = time.process_time()
    verdicts = fn(pairs)
    return verdicts, time.process_time() - start


GRADERS = {"mathrl": grade_mathrl, "math-verify": grade_math_verify}


def timed(name: str, pairs: list[Pair], workers: int = 1) -> tuple[list[bool], float]:
    """``name``'s verdicts on ``pairs`` and the CPU seconds they took, summed over ``workers``
    processes (each grades every n-th pair; the speed is per core)."""
    chunks = [pairs[i::workers] for i in range(workers)]
    if workers == 1:
        results = [_timed_chunk((name, pairs))]
    else:
        import multiprocessing

        with multiprocessing.get_context("fork").Pool(workers) as pool:
            results = pool.map(_timed_chunk, [(name, c) for c in chunks])
    verdicts = [None] * len(pairs)
    for i, (chunk_verdicts, _) in enumerate(results):
        verdicts[i::workers] = chunk_verdicts
    return verdicts, sum(seconds for _, seconds in results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", type=Path,
                        default=Path(os.environ.get("MATHRL_DATA_DIR", "../shared/data")))
    parser.add_argument("--examples", type=int, default=3, help="examples printed per kind of error")
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="grading processes")
    parser.add_argument("--json", type=Path, default=None, help="write every pair and both verdicts here")
    args = parser.parse_args()
    golds = read_golds(args.data_dir)
    pairs = make_pairs(golds, args.pairs, args.seed)
    ours, ours_s = timed("mathrl", pairs, args.workers)
    peer, peer_s = timed("math-verify", pairs, args.workers)
    a, b = tally(pairs, ours), tally(pairs, peer)
    print(f"{len(pairs):,} pairs (seed {args.seed}) from the golds of {len(golds):,} problems "
          f"({len({g.text for g in golds}):,} distinct answers) in {len({g.source for g in golds})} "
          f"benchmark files in {args.data_dir}; graded in {args.workers} processes")
    distinct = Counter(kind for kind, _, _ in {(p.kind, p.response, p.gold) for p in pairs})
    golds_used = Counter(kind for kind, _ in {(p.kind, p.gold) for p in pairs})
    print(f"{'kind':<26} {'truth':>7} {'pairs':>7} {'distinct':>8} {'golds':>6} {'mathrl FP':>10} "
          f"{'mathrl FN':>10} {'m-v FP':>8} {'m-v FN':>8}")
    for kind in KINDS:
        if kind in a:
            print(f"{kind:<26} {'equal' if kind in EQUAL_KINDS else 'unequal':>7} {a[kind]['pairs']:>7,} "
                  f"{distinct[kind]:>8,} {golds_used[kind]:>6,} {a[kind]['fp']:>10,} {a[kind]['fn']:>10,} "
                  f"{b[kind]['fp']:>8,} {b[kind]['fn']:>8,}")
    total = {side: {m: sum(t[k][m] for k in t) for m in ("fp", "fn")} for side, t in (("a", a), ("b", b))}
    print(f"{'all':<26} {'':>7} {len(pairs):>7,} {sum(distinct.values()):>8,} {'':>6} "
          f"{total['a']['fp']:>10,} {total['a']['fn']:>10,} {total['b']['fp']:>8,} {total['b']['fn']:>8,}")
    print(f"speed, gradings per CPU second: mathrl {len(pairs) / ours_s:,.0f} ({ours_s:.1f} s), "
          f"math-verify 0.9 {len(pairs) / peer_s:,.0f} ({peer_s:.1f} s): mathrl {peer_s / ours_s:.1f}x")
    for name, verdicts in (("mathrl", ours), ("math-verify", peer)):
        wrong = defaultdict(list)
        for p, v in zip(pairs, verdicts, strict=True):
            if v != p.equal:
                wrong[p.kind].append(p)
        for kind, found in wrong.items():
            what = "false negatives" if kind in EQUAL_KINDS else "false positives"
            distinct = {(p.response, p.gold) for p in found}
            print(f"\n{name} {what}, {kind}: {len(found)} ({len(distinct)} distinct)")
            for p in list({(p.response, p.gold): p for p in found}.values())[:args.examples]:
                print(f"  gold {p.gold!r}  response {p.response!r}")
    if args.json:
        rows = [{**asdict(p), "mathrl": x, "math_verify": y}
                for p, x, y in zip(pairs, ours, peer, strict=True)]
        args.json.write_text("\n".join(json.dumps(r) for r in rows) + "\n")


if __name__ == "__main__":
    main()
