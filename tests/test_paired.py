"""Paired significance: exact McNemar, paired bootstrap, Holm, against hand-worked numbers."""

import math

import pytest

from mathrl.eval.paired import holm, mcnemar_exact, paired_bootstrap


def test_mcnemar_exact_against_the_binomial_by_hand():
    assert mcnemar_exact(1, 9) == pytest.approx(2 * 11 / 1024)
    assert mcnemar_exact(9, 1) == mcnemar_exact(1, 9)
    assert mcnemar_exact(0, 5) == pytest.approx(2 / 32)
    assert mcnemar_exact(3, 3) == 1.0 and mcnemar_exact(0, 0) == 1.0
    # 5 vs 15 discordant: 2 * sum_{i<=5} C(20, i) / 2^20 = 2 * 21700 / 1048576
    assert sum(math.comb(20, i) for i in range(6)) == 21700
    assert mcnemar_exact(5, 15) == pytest.approx(2 * 21700 / 2**20)


def test_paired_bootstrap():
    same = [0.25, 0.5, 1.0, 0.0]
    assert paired_bootstrap(same, same) == (0.0, (0.0, 0.0), 1.0)
    a = [0.0] * 40 + [1.0] * 60
    b = [1.0] * 40 + [1.0] * 60  # B fixes 40 problems A gets wrong and breaks none
    mean, (low, high), p = paired_bootstrap(a, b, seed=1)
    assert mean == pytest.approx(0.4) and 0.3 < low < 0.4 < high <= 0.5 and p == 0.0
    noisy_a = [1.0, 0.0] * 20
    noisy_b = [0.0, 1.0] * 20  # as many fixed as broken: no difference
    mean, (low, high), p = paired_bootstrap(noisy_a, noisy_b, seed=1)
    assert mean == 0.0 and low < 0 < high and p > 0.5
    assert paired_bootstrap(a, b, seed=3) == paired_bootstrap(a, b, seed=3)  # seeded
    with pytest.raises(ValueError):
        paired_bootstrap([1.0], [1.0, 0.0])


def test_holm_step_down():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.2, 0.001]) == pytest.approx([0.2, 0.002])
    assert holm([0.6, 0.7]) == pytest.approx([1.0, 1.0])
    assert holm([]) == []
