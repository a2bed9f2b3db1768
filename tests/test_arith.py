import re

import pytest

from mathrl.grading import extract_answer, grade
from mathrl.tasks import arith
from mathrl.tasks.arith import Chain, render_expression, split_of


def test_same_seed_same_problems_and_prefix_stable():
    a = arith.generate("train", 200, seed=3)
    b = arith.generate("train", 200, seed=3)
    assert a == b
    assert arith.generate("train", 50, seed=3) == a[:50]
    assert arith.generate("train", 50, seed=4) != a[:50]


def test_splits_are_disjoint_by_computation():
    def computations(split):
        out = set()
        for p in arith.generate(split, 3000, seed=0):
            numbers = re.findall(r"\d+", p.problem)
            out.add((p.level, tuple(numbers), p.answer))
        return out

    train, test = computations("train"), computations("test")
    assert len(test) > 2500 and len(train) > 2500
    assert train.isdisjoint(test)


def test_split_membership_is_a_property_of_the_computation():
    for p in arith.generate("test", 300, seed=7):
        assert p.id.startswith("arith-test-")
    chain = Chain(12, (("+", 5),))
    assert split_of(chain) == split_of(Chain(12, (("+", 5),)))
    shares = [split_of(Chain(s, (("+", n),))) for s in range(2, 60) for n in range(1, 60)]
    assert 0.05 < shares.count("test") / len(shares) < 0.15


def test_problems_are_distinct_until_a_level_runs_out():
    eval_set = arith.generate("test", 100, seed=0, levels=[1])
    assert len({p.problem for p in eval_set}) == 100
    # Level 1 has about 130 test computations: a longer stream starts a new pass, not an error.
    stream = arith.generate("test", 400, seed=0, levels=[1])
    assert len({p.id for p in stream}) == 400
    assert 100 < len({p.problem for p in stream}) < 400


def test_levels_add_steps_and_digits():
    steps, biggest = {}, {}
    for p in arith.generate("train", 1000, seed=0):
        lines = [ln for ln in p.solution.split("\n") if re.fullmatch(r"-?\d+ [-+*/] \d+ = -?\d+", ln)]
        steps.setdefault(p.level, []).append(len(lines))
        biggest[p.level] = max(biggest.get(p.level, 0), *map(int, re.findall(r"\d+", p.problem)))
    assert set(steps[1]) == {1} and set(steps[2]) == {2}
    assert min(steps[4]) >= 3 and min(steps[5]) >= 4
    assert biggest[1] <= 30 < biggest[2] <= 50 < biggest[4] <= 99 < biggest[5] <= 999


def test_records_and_reference_traces():
    problems = arith.generate("train", 500, seed=1)
    for p in problems:
        assert p.source == "arith" and p.level in range(1, 6)
        assert p.subject in {"expression", "word problem"}
        assert int(p.answer) == int(p.answer)  # integer answers
        assert p.solution.startswith("<think>\n") and "\n</think>\n\n" in p.solution
        assert extract_answer(p.solution) == p.answer
        assert grade(p.solution, p.answer)
    with_rechecks = sum("verify" in p.solution or "heck" in p.solution for p in problems)
    assert 0.25 < with_rechecks / len(problems) < 0.45  # 40% of traces; ~1/16 of short ones add none


def test_trace_arithmetic_is_correct():
    for p in arith.generate("train", 400, seed=2):
        for line in p.solution.split("\n"):
            m = re.fullmatch(r"(-?\d+) ([-+*/]) (\d+) = (-?\d+)", line)
            if m:
                x, op, n, y = int(m[1]), m[2], int(m[3]), int(m[4])
                assert {"+": x + n, "-": x - n, "*": x * n, "/": x // n}[op] == y
                assert op != "/" or x % n == 0


def test_expression_rendering_keeps_left_to_right_order():
    assert render_expression(Chain(23, (("+", 45), ("*", 3)))) == r"(23 + 45) \times 3"
    assert render_expression(Chain(2, (("*", 3), ("+", 4)))) == r"2 \times 3 + 4"
    assert render_expression(Chain(9, (("-", 4), ("/", 5), ("*", 2)))) == r"(9 - 4) \div 5 \times 2"


@pytest.mark.parametrize("kwargs", [{"split": "valid"}, {"levels": [0]}, {"levels": []}])
def test_bad_arguments_are_clear_errors(kwargs):
    with pytest.raises(ValueError, match="arith"):
        arith.generate(n=1, **kwargs)


def test_rechecks_are_added_after_every_step_or_removed_and_steps_are_kept():
    from mathrl.tasks.arith import step_results, with_rechecks

    solution = ("<think>\n18 - 9 = 9\n9 + 25 = 34\nCheck: 34 - 25 = 9. Good.\n34 + 11 = 45\n</think>\n\n"
                "The answer is $\\boxed{45}$.")
    assert step_results(solution) == ["9", "34", "45"]
    bare = with_rechecks(solution, 0)
    assert bare == "<think>\n18 - 9 = 9\n9 + 25 = 34\n34 + 11 = 45\n</think>\n\nThe answer is $\\boxed{45}$."
    verbose = with_rechecks(solution, 100).split("\n")
    assert verbose[1] == "18 - 9 = 9" and "9 + 9 = 18" in verbose[2]
    assert "34 - 25 = 9" in verbose[4] and "45 - 11 = 34" in verbose[6]
    assert step_results(with_rechecks(solution, 100)) == ["9", "34", "45"]
