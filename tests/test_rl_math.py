"""The RL math, each piece against numbers worked by hand."""

import math

import pytest
import torch

from mathrl.train.rewards import EfficiencyState, efficiency_reward, format_reward, grade_group
from mathrl.train.rl import (
    group_advantages,
    group_outcome,
    importance_sampling_loss,
    is_constant,
    k3_kl,
    make_loss,
    ppo_clip_loss,
    token_weight,
    truncated_is_weights,
)
from mathrl.types import Completion, Problem


def test_group_advantages():
    assert group_advantages([1, 0, 0, 1]) == [0.5, -0.5, -0.5, 0.5]
    assert group_advantages([1, 0, 0, 0]) == [0.75, -0.25, -0.25, -0.25]
    # std of [1,0,0,0] is sqrt(3)/4 = 0.4330; 0.75 / 0.4330 = 1.7321
    scaled = group_advantages([1, 0, 0, 0], scale_by_std=True, eps=0.0)
    assert scaled == pytest.approx([math.sqrt(3), -1 / math.sqrt(3), -1 / math.sqrt(3), -1 / math.sqrt(3)])
    assert group_advantages([0.5, 0.5]) == [0.0, 0.0]
    assert is_constant([0.5, 0.5, 0.5]) and not is_constant([0.5, 0.5, 0.75])
    assert [group_outcome(g) for g in ([True, True], [False, False], [True, False])] == [
        "all_correct", "all_wrong", "mixed"]


def test_token_weights():
    # Batch: 2 sequences of 3 and 1 tokens (4 tokens), max_tokens 8.
    assert token_weight(3, 2, 4, 8, "token_sum") == 1.0
    assert token_weight(3, 2, 4, 8, "token_mean") == 0.25
    assert token_weight(3, 2, 4, 8, "constant") == 1 / 16
    assert token_weight(3, 2, 4, 8, "sequence_mean") == 1 / 6
    assert token_weight(1, 2, 4, 8, "sequence_mean") == 1 / 2
    with pytest.raises(ValueError):
        token_weight(1, 1, 1, 1, "mean")


def test_importance_sampling_loss_and_its_gradient():
    logp = torch.tensor([[math.log(0.5), math.log(0.2)]], requires_grad=True)
    old = torch.tensor([[math.log(0.25), math.log(0.2)]])
    adv = torch.tensor([2.0])
    terms = importance_sampling_loss(logp, old, adv)
    # ratios 2 and 1 -> losses -4 and -2; d(-r A)/d logp = -r A.
    assert terms.loss_B_T[0].tolist() == pytest.approx([-4.0, -2.0])
    terms.loss_B_T.sum().backward()
    assert logp.grad[0].tolist() == pytest.approx([-4.0, -2.0])
    assert not terms.clipped_B_T.any()


def test_ppo_clip_with_separate_low_and_high_epsilon():
    old = torch.zeros(1, 4)
    ratios = torch.tensor([[1.5, 0.5, 1.1, 0.9]])
    logp = ratios.log()
    pos = ppo_clip_loss(logp, old, torch.tensor([1.0]), clip_low=0.2, clip_high=0.28)
    # A > 0: min(r, clip(r, 0.8, 1.28)) -> 1.28, 0.5, 1.1, 0.9
    assert (-pos.loss_B_T[0]).tolist() == pytest.approx([1.28, 0.5, 1.1, 0.9])
    assert pos.clipped_B_T.tolist() == [[True, False, False, False]]
    neg = ppo_clip_loss(logp, old, torch.tensor([-1.0]), clip_low=0.2, clip_high=0.28)
    # A < 0: min(-r, -clip(r)) = -max(r, clip(r)) -> -1.5, -0.8, -1.1, -0.9
    assert (-neg.loss_B_T[0]).tolist() == pytest.approx([-1.5, -0.8, -1.1, -0.9])
    assert neg.clipped_B_T.tolist() == [[False, True, False, False]]


def test_k3_kl_and_the_loss_chosen_once():
    logp = torch.tensor([[math.log(0.5)]])
    ref = torch.tensor([[math.log(0.25)]])
    # d = log(0.25/0.5) = -log 2: exp(d) - d - 1 = 0.5 + 0.6931 - 1 = 0.1931
    assert k3_kl(logp, ref).item() == pytest.approx(0.5 + math.log(2) - 1)
    assert k3_kl(logp, logp).item() == 0.0
    loss = make_loss("importance_sampling", kl_coef=0.1)
    terms = loss(logp, logp, torch.tensor([1.0]), ref)
    assert terms.loss_B_T.item() == pytest.approx(-1.0 + 0.1 * (0.5 + math.log(2) - 1))
    assert make_loss("ppo_clip")(logp, logp, torch.tensor([1.0])).loss_B_T.item() == pytest.approx(-1.0)
    with pytest.raises(ValueError):
        make_loss("reinforce")


def test_truncated_importance_weights_per_token_and_per_sequence():
    trainer = torch.tensor([[math.log(0.6), math.log(0.2), 0.0]])
    sampler = torch.tensor([[math.log(0.3), math.log(0.4), -5.0]])
    mask = torch.tensor([[True, True, False]])
    # Token ratios 2 and 0.5 (the padded position counts as 1); cap 1.5 cuts the first.
    w, cut = truncated_is_weights(trainer, sampler, mask, cap=1.5)
    assert w[0].tolist() == pytest.approx([1.5, 0.5, 1.0]) and cut.tolist() == [[True, False, False]]
    # Per sequence: 2 x 0.5 = 1 on every token, nothing cut.
    w, cut = truncated_is_weights(trainer, sampler, mask, cap=1.5, level="sequence")
    assert w[0].tolist() == pytest.approx([1.0, 1.0, 1.0]) and not cut.any()


def test_tis_loss_is_the_is_loss_until_the_cap_then_scales_the_gradient_down():
    sampler = torch.tensor([[math.log(0.25), math.log(0.2)]])
    adv = torch.tensor([2.0])
    grads = {}
    for cap in (None, 10.0, 1.5):
        logp = torch.tensor([[math.log(0.5), math.log(0.2)]], requires_grad=True)
        terms = make_loss("importance_sampling", tis_cap=cap)(logp, sampler, adv)
        terms.loss_B_T.sum().backward()
        grads[cap] = logp.grad[0].tolist()
        if cap is not None:
            # The ratio is against the trainer's own logprobs; the mismatch is the (capped) weight.
            assert terms.loss_B_T[0].tolist() == pytest.approx([-2.0 * min(2.0, cap), -2.0])
            assert terms.truncated_B_T.tolist() == [[cap < 2.0, False]]
    assert grads[10.0] == pytest.approx(grads[None])  # ratios 2 and 1, under the cap: the same
    assert grads[1.5] == pytest.approx([-3.0, -2.0])  # the first token's weight capped at 1.5


def _c(text, n, finish="stop"):
    return Completion(tuple(range(n)), (0.0,) * n, text, finish)


def test_rewards_correct_format_and_self_improving_efficiency():
    assert format_reward(_c("<think>x</think> $\\boxed{3}$", 5)) == 1.0
    assert format_reward(_c("<think>x</think> $\\boxed{3}$", 5, "length")) == 0.0
    assert format_reward(_c("<think>\\boxed{3}", 5)) == 0.0  # only inside an unfinished thought
    assert efficiency_reward(True, 40, 30) == 0.75 and efficiency_reward(False, 10, 30) == 0.0

    problem = Problem("p1", "1+2?", "3")
    state = EfficiencyState()
    weights = {"correct": 1.0, "efficiency": 1.0}
    group = [_c("\\boxed{3}", 40), _c("\\boxed{4}", 10), _c("\\boxed{3}", 20), _c("\\boxed{3}", 10, "length")]
    graded = grade_group(problem, group, "boxed", weights, state)
    assert state.best == {"p1": 20}  # the truncated one does not set the record
    assert [g.reward_parts["efficiency"] for g in graded] == [0.5, 0.0, 1.0, 0.0]
    assert [g.reward for g in graded] == [1.5, 0.0, 2.0, 1.0]
    # Later, a longer best answer does not raise the record; a shorter one lowers it.
    graded = grade_group(problem, [_c("\\boxed{3}", 25), _c("\\boxed{3}", 16)], "boxed", weights, state)
    assert state.best == {"p1": 16}
    assert [g.reward_parts["efficiency"] for g in graded] == [16 / 25, 1.0]
    only_correct = grade_group(problem, group, "boxed", {"correct": 1.0})
    assert [g.reward for g in only_correct] == [1.0, 0.0, 1.0, 1.0]
