"""The synthetic task ``arith``: procedural arithmetic and word problems with integer answers.

Each problem is a chain of operations applied left to right to a start value, e.g.
``23 -> +45 -> *3``, rendered either as a LaTeX expression (``Compute $(23 + 45) \\times 3$.``)
or as a short word problem. Five levels add steps, digits and operators. Reference solutions
are chain-of-thought traces, one line per step, inside ``<think>...</think>``, then a final
``\\boxed{}``; about 40% of traces also carry redundant re-checking lines, so a model trained
on them has tokens to lose (the token-efficiency study needs that).

Splits are disjoint by construction: a problem's split is a hash of its computation (start
value and operations, not its wording), so no seed or size can put a test computation in train.
Generation is a pure function of (split, n, seed, levels) and prefix-stable: the first k
problems of ``generate(n=100)`` are those of ``generate(n=10)``.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from mathrl.types import Problem

SOURCE = "arith"
SPLITS = ("train", "test")
TEST_FRACTION_PERCENT = 10
# The standard test set (the tiny model's quoted accuracy): seed 0, 300 problems, levels 1-3.
EVAL_LEVELS = (1, 2, 3)
EVAL_PROBLEMS = 300


@dataclass(frozen=True)
class LevelSpec:
    min_ops: int
    max_ops: int
    max_operand: int
    ops: str  # subset of "+-*/"
    max_factor: int  # multipliers and divisors are drawn from 2..max_factor
    allow_negative: bool
    word_problem_percent: int


# Sized for a ~1M-parameter model trained for minutes on a CPU: levels 1-3 are learnable in
# that budget (a base model gets some right), 4-5 mostly are not (room for later training).
LEVELS: dict[int, LevelSpec] = {
    1: LevelSpec(1, 1, 30, "+-", 0, False, 50),
    2: LevelSpec(2, 2, 50, "+-", 0, False, 50),
    3: LevelSpec(2, 3, 50, "+-*", 5, False, 50),
    4: LevelSpec(3, 4, 99, "+-*/", 9, False, 40),
    5: LevelSpec(4, 5, 999, "+-*/", 12, True, 0),
}

Op = tuple[str, int]  # ("+", 45)


@dataclass(frozen=True)
class Chain:
    start: int
    ops: tuple[Op, ...]

    def values(self) -> list[int]:
        """The running value after each step, starting with ``start``."""
        out = [self.start]
        for op, n in self.ops:
            out.append(_apply(out[-1], op, n))
        return out

    @property
    def answer(self) -> int:
        return self.values()[-1]


def _apply(x: int, op: str, n: int) -> int:
    if op == "+":
        return x + n
    if op == "-":
        return x - n
    if op == "*":
        return x * n
    assert x % n == 0, "division steps are drawn to be exact"
    return x // n


def split_of(chain: Chain) -> str:
    """The split a computation belongs to, fixed by a hash of it (not of its wording)."""
    digest = hashlib.sha256(repr((chain.start, chain.ops)).encode()).hexdigest()
    return "test" if int(digest[:8], 16) % 100 < TEST_FRACTION_PERCENT else "train"


def _draw_chain(rng: random.Random, spec: LevelSpec) -> Chain:
    cur = rng.randint(2, spec.max_operand)
    start, ops = cur, []
    for _ in range(rng.randint(spec.min_ops, spec.max_ops)):
        op = rng.choice(spec.ops)
        if op == "/":
            divisors = [k for k in range(2, spec.max_factor + 1) if cur % k == 0 and cur != 0]
            op = "/" if divisors else "+"
        if op == "+":
            n = rng.randint(1, spec.max_operand)
        elif op == "-":
            top = spec.max_operand if spec.allow_negative else min(spec.max_operand, cur - 1)
            n = rng.randint(1, max(1, top))
        elif op == "*":
            n = rng.randint(2, spec.max_factor)
        else:
            n = rng.choice(divisors)
        ops.append((op, n))
        cur = _apply(cur, op, n)
    return Chain(start, tuple(ops))


_LATEX_OP = {"+": "+", "-": "-", "*": r"\times", "/": r"\div"}


def render_expression(chain: Chain) -> str:
    """LaTeX for the chain with the fewest parentheses that keep left-to-right order."""
    expr, additive = str(chain.start), False
    for op, n in chain.ops:
        if op in "*/" and additive:
            expr = f"({expr})"
        expr = f"{expr} {_LATEX_OP[op]} {n}"
        additive = op in "+-"
    return expr


_NAMES = ["Ava", "Ben", "Chloe", "Dan", "Emma", "Finn", "Grace", "Hugo", "Isla", "Jack",
          "Lena", "Mia", "Noah", "Omar", "Priya", "Sam", "Tara", "Zoe"]
_ITEMS = ["apples", "marbles", "stickers", "coins", "books", "stamps", "cards", "shells",
          "pencils", "beads"]
_STEP_TEXT = {
    "+": ["Then {name} buys {n} more.", "Then {name} finds {n} more.",
          "Then a friend gives {name} {n} more."],
    "-": ["Then {name} gives away {n}.", "Then {name} sells {n}.", "Then {name} loses {n}."],
    "*": ["Then the number of {items} becomes {n} times as large."],
    "/": ["Then {name} splits them into {n} equal piles and keeps one pile."],
}


def render_word_problem(chain: Chain, rng: random.Random) -> str:
    name, items = rng.choice(_NAMES), rng.choice(_ITEMS)
    parts = [f"{name} has {chain.start} {items}."]
    for op, n in chain.ops:
        parts.append(rng.choice(_STEP_TEXT[op]).format(name=name, items=items, n=n))
    parts.append(f"How many {items} does {name} have now?")
    return " ".join(parts)


_TRACE_OP = {"+": "+", "-": "-", "*": "*", "/": "/"}
_INVERSE = {"+": "-", "-": "+", "*": "/", "/": "*"}
_RECHECK = ["Let me double-check: {y} {inv} {n} = {x}. Yes, that is right.",
            "Wait, let me verify that step. {y} {inv} {n} = {x}. Correct.",
            "Check: {y} {inv} {n} = {x}. Good."]
RECHECK_TRACE_PERCENT = 40


def render_trace(chain: Chain, rng: random.Random) -> str:
    """Chain-of-thought in a thinking block, then the boxed answer.

    A step line is ``x op n = y``. A re-checking trace adds, after about half of its steps, a
    line that recomputes the step backwards: correct, and redundant.
    """
    values = chain.values()
    recheck = rng.randrange(100) < RECHECK_TRACE_PERCENT
    lines = []
    for (op, n), x, y in zip(chain.ops, values[:-1], values[1:], strict=True):
        lines.append(f"{x} {_TRACE_OP[op]} {n} = {y}")
        if recheck and rng.random() < 0.5:
            lines.append(rng.choice(_RECHECK).format(x=x, y=y, n=n, inv=_INVERSE[op]))
    body = "\n".join(lines)
    return f"<think>\n{body}\n</think>\n\nThe answer is $\\boxed{{{chain.answer}}}$."


_STEP_LINE = re.compile(r"^(-?\d+) ([-+*/]) (-?\d+) = (-?\d+)$")


def step_results(solution: str) -> list[str]:
    """The result of each step line of a trace, in order (re-check lines skipped)."""
    head = solution.partition("</think>")[0]
    return [m.group(4) for line in head.split("\n") if (m := _STEP_LINE.match(line))]


def with_rechecks(solution: str, percent: int, seed: int = 0) -> str:
    """A trace re-rendered with a re-check line after each step with probability ``percent``%.

    100 re-checks every step, 0 none (what an efficient model should say). The efficiency study's
    verbose baseline is trained on 85: it re-checks most steps, greedily always, yet its samples
    vary in length, which is what an efficiency reward needs. Step lines and the answer are kept.
    """
    rng = random.Random(f"recheck/{seed}/{solution}")
    head, _, tail = solution.partition("</think>")
    lines = []
    for line in head.removeprefix("<think>").strip("\n").split("\n"):
        step = _STEP_LINE.match(line)
        if step is None:
            continue  # an old re-check line
        lines.append(line)
        if rng.randrange(100) < percent:
            x, op, n, y = step.groups()
            lines.append(rng.choice(_RECHECK).format(x=x, y=y, n=n, inv=_INVERSE[op]))
    return "<think>\n" + "\n".join(lines) + "\n</think>" + tail


def generate(split: str = "train", n: int = 1000, seed: int = 0,
             levels: Sequence[int] = (1, 2, 3, 4, 5)) -> list[Problem]:
    """``n`` problems of ``split``, cycling through ``levels`` (distinct while a level's space lasts).

    >>> [p.answer for p in generate("test", 2, seed=0, levels=[1])] == \\
    ...     [p.answer for p in generate("test", 2, seed=0, levels=[1])]
    True
    """
    return list(iter_problems(split, seed=seed, levels=levels, limit=n))


def iter_problems(split: str = "train", seed: int = 0, levels: Sequence[int] = (1, 2, 3, 4, 5),
                  limit: int | None = None) -> Iterator[Problem]:
    """Stream problems of ``split``.

    Computations are distinct within a pass over a level's space; once a level runs out (level
    1 has about 1,200 train and 130 test computations), a new pass starts, with fresh wordings.
    """
    if split not in SPLITS:
        raise ValueError(f"arith split must be one of {SPLITS}, got {split!r}")
    bad = [lv for lv in levels if lv not in LEVELS]
    if bad or not levels:
        raise ValueError(f"arith levels must be a non-empty subset of 1..5, got {list(levels)}")
    rng = random.Random(f"arith/{split}/{seed}")
    seen: dict[int, set[Chain]] = {lv: set() for lv in levels}
    i = 0
    while limit is None or i < limit:
        level = levels[i % len(levels)]
        chain = _draw_unseen(rng, LEVELS[level], split, seen[level])
        if chain is None:  # this pass over the level is exhausted
            seen[level].clear()
            chain = _draw_unseen(rng, LEVELS[level], split, seen[level])
        seen[level].add(chain)
        word = rng.randrange(100) < LEVELS[level].word_problem_percent
        if word:
            text = render_word_problem(chain, rng)
        else:
            text = f"Compute ${render_expression(chain)}$."
        yield Problem(
            id=f"arith-{split}-{seed}-{i:06d}",
            problem=text,
            answer=str(chain.answer),
            level=level,
            subject="word problem" if word else "expression",
            source=SOURCE,
            solution=render_trace(chain, rng),
        )
        i += 1


def _draw_unseen(rng: random.Random, spec: LevelSpec, split: str, seen: set[Chain],
                 attempts: int = 2000) -> Chain | None:
    for _ in range(attempts):
        chain = _draw_chain(rng, spec)
        if chain not in seen and split_of(chain) == split:
            return chain
    return None


def eval_problems(levels: Sequence[int] = EVAL_LEVELS, n: int = EVAL_PROBLEMS) -> list[Problem]:
    """The standard arith test set (seed 0): ``n`` problems cycling through ``levels``."""
    return generate("test", n, seed=0, levels=levels)
