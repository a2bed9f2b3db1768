"""Evaluation statistics against hand-computed values."""

import math

import pytest

from mathrl.eval.metrics import (
    efficiency,
    majority_correct,
    normal_interval,
    pass_at_k,
    percentile,
    summarize,
    wilson_interval,
)


def test_normal_interval():
    p, half = normal_interval(80, 100)
    assert p == 0.8 and half == pytest.approx(1.959964 * math.sqrt(0.8 * 0.2 / 100))  # 0.0784
    assert normal_interval(0, 30) == (0.0, 0.0)  # the collapse at 0% Wilson fixes


def test_wilson_interval():
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)
    lo, hi = wilson_interval(8, 10)
    assert (lo, hi) == pytest.approx((0.4902, 0.9433), abs=1e-4)


def test_pass_at_k():
    assert pass_at_k(4, 1, 1) == 0.25
    assert pass_at_k(4, 1, 2) == pytest.approx(1 - 3 / 6)  # C(3,2)/C(4,2)
    assert pass_at_k(5, 2, 3) == pytest.approx(1 - 1 / 10)  # C(3,3)/C(5,3)
    assert pass_at_k(5, 0, 5) == 0.0 and pass_at_k(5, 4, 2) == 1.0
    with pytest.raises(ValueError):
        pass_at_k(2, 1, 3)


def test_majority_vote():
    keys, ok = ["3", "4", "4", None, "3"], [True, False, False, False, True]
    assert majority_correct(keys, ok, 1) is True
    assert majority_correct(keys, ok, 3) is False  # "4" twice beats "3" once
    assert majority_correct(keys, ok, 5) is True  # 2-2 tie between "3" and "4": "3" was seen first
    assert majority_correct(["3", "4", "4", "3"], [True, False, False, True], 4) is True  # tie -> first seen
    assert majority_correct([None, None], [False, False], 2) is False


def test_percentile_and_efficiency():
    values = [10, 20, 30, 40, 50]
    assert percentile(values, 50) == 30 and percentile(values, 90) == 46 and percentile([], 50) == 0.0
    assert efficiency(0.8, 400) == 0.2


def test_summarize_by_hand():
    def s(ok, key, tokens, thinking, finish="stop"):
        return {"correct": ok, "answer_key": key, "n_tokens": tokens, "n_thinking_tokens": thinking,
                "finish_reason": finish}

    groups = [[s(True, "1", 10, 6), s(False, "2", 30, 20, "length")],
              [s(False, "7", 20, 10), s(False, "7", 40, 20)]]
    m = summarize(groups)
    assert (m["problems"], m["samples"], m["n"]) == (2, 4, 2)
    assert m["accuracy"] == 0.25 and m["ci95_normal"] == pytest.approx(1.959964 * math.sqrt(0.25 * 0.75 / 4))
    assert m["pass_at_k"] == {"1": 0.25, "2": 0.5}
    assert m["maj_at_k"] == {"1": 0.5, "2": 0.5}  # tie in group 1 -> first answer "1", correct
    assert m["mean_tokens"] == 25 and m["median_tokens"] == 25 and m["p90_tokens"] == pytest.approx(37)
    assert m["mean_thinking_tokens"] == 14 and m["thinking_share"] == 0.56
    assert m["efficiency"] == pytest.approx(25 / 25) and m["truncation_rate"] == 0.25
