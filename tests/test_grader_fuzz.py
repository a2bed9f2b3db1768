"""The grader fuzzed against math-verify (benchmarks/grader_fuzz.py, 2,000 of its pairs): mathrl
grades no near miss as equal and misses no more equal answers than math-verify, kind by kind."""

import importlib.util
import random
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "grader_fuzz.py"
spec = importlib.util.spec_from_file_location("grader_fuzz", SCRIPT)
fuzz = importlib.util.module_from_spec(spec)
sys.modules["grader_fuzz"] = fuzz  # its dataclasses look their module up
spec.loader.exec_module(fuzz)


@pytest.fixture(scope="module")
def golds(data_dir):
    return fuzz.read_golds(data_dir)


@pytest.fixture(scope="module")
def pools(golds):
    return fuzz.eligible(golds)


@pytest.fixture(scope="module")
def pairs(golds, pools):
    return fuzz.make_pairs(golds, 2000, seed=0, pools=pools)


def test_pairs_are_seeded_and_every_kind_is_there(golds, pools, pairs):
    assert fuzz.make_pairs(golds, 2000, seed=0, pools=pools) == pairs
    assert fuzz.make_pairs(golds, 2000, seed=1, pools=pools) != pairs
    counts = {kind: sum(p.kind == kind for p in pairs) for kind in fuzz.KINDS}
    assert min(counts.values()) >= 2000 // len(fuzz.KINDS), counts
    assert all(p.equal == (p.kind in fuzz.EQUAL_KINDS) for p in pairs)
    assert {g.source for g in golds} >= {"math500", "math_train_12k", "gsm8k_test", "aime2024", "aime2025",
                                         "amc23", "olympiadbench", "minerva_math"}
    # A near miss never leaves the gold as it was.
    assert not [p for p in pairs if not p.equal and f"{{{p.gold}}}" in p.response]


ROOTS = fuzz.Gold("-\\sqrt{3},-1,1,\\sqrt{3}", "Find all the solutions, separated by commas.", "test")


def _rewrites(kind: str, gold: fuzz.Gold, tries: int = 50) -> list[str | None]:
    rng = random.Random(0)
    return [fuzz.REWRITES[kind](gold, rng) for _ in range(tries)]


def test_near_misses_are_unequal_by_construction():
    gold = fuzz.Gold("\\frac{3}{4}", "", "test")
    assert all(fuzz.number_value(a) not in (None, fuzz.number_value(gold.text))
               for a in _rewrites("digit_off", gold))  # never a zero denominator, never the same value
    assert _rewrites("sign", fuzz.Gold("0", "", "test")) == [None] * 50  # -0 is 0
    assert _rewrites("swapped_tuple", fuzz.Gold("(2, 2)", "", "test")) == [None] * 50  # nothing to swap
    roots = {fuzz.scalar_value(i) for i in fuzz.split_top(ROOTS.text)}
    for answer in _rewrites("wrong_root", ROOTS):  # -\sqrt{1} is -1: a changed root is never another root
        assert answer is None or {fuzz.scalar_value(i) for i in fuzz.split_top(answer)} != roots


def test_equal_rewrites_keep_the_value():
    spelled = _rewrites("thousands", fuzz.Gold("12500", "", "t"))
    assert {a.translate({ord(c): None for c in "{},\\ "}) for a in spelled} == {"12500"}
    assert all(fuzz.number_value(a) == fuzz.number_value("0.75")
               for a in _rewrites("fraction_decimal_percent", fuzz.Gold("\\frac{3}{4}", "", "t")))
    reordered = _rewrites("reordered", ROOTS)
    assert all(sorted(fuzz.split_top(a)) == sorted(fuzz.split_top(ROOTS.text)) for a in reordered)
    assert all(a.replace(" ", "") != ROOTS.text for a in reordered)


@pytest.mark.slow
def test_mathrl_has_no_false_positive_and_no_more_false_negatives_than_math_verify(pairs):
    ours = fuzz.tally(pairs, fuzz.grade_mathrl(pairs))
    peer = fuzz.tally(pairs, fuzz.grade_math_verify(pairs))
    assert sum(t["fp"] for t in ours.values()) == 0, ours
    for kind in fuzz.KINDS:
        assert ours[kind]["fn"] <= peer[kind]["fn"], (kind, ours[kind], peer[kind])
