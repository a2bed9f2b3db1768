"""The RL math, each piece against numbers worked by hand."""

import math

import pytest
import torch

from mathrl.grading import Grader
from mathrl.train.losses import Loss, LossInputs, k3_kl, truncated_is_weights
from mathrl.train.rewards import RewardSet, efficiency_reward, format_reward
from mathrl.train.rl import group_advantages, group_outcome, is_constant, split_groups, token_weight
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


def _inputs(sampler, adv, mask=None, ref=None):
    mask = torch.ones_like(sampler, dtype=torch.bool) if mask is None else mask
    return LossInputs(mask, sampler, adv.expand_as(sampler) if adv.dim() == 1 else adv, ref)


def test_importance_sampling_loss_and_its_gradient():
    logp = torch.tensor([[math.log(0.5), math.log(0.2)]], requires_grad=True)
    old = torch.tensor([[math.log(0.25), math.log(0.2)]])
    adv = torch.tensor([2.0])
    loss_B_T, diagnostics = Loss("importance_sampling")(logp, _inputs(old, adv))
    # ratios 2 and 1 -> losses -4 and -2; d(-r A)/d logp = -r A.
    assert loss_B_T[0].tolist() == pytest.approx([-4.0, -2.0])
    loss_B_T.sum().backward()
    assert logp.grad[0].tolist() == pytest.approx([-4.0, -2.0])
    assert diagnostics == {}


def test_ppo_clip_with_separate_low_and_high_thresholds():
    old = torch.zeros(1, 4)
    ratios = torch.tensor([[1.5, 0.5, 1.1, 0.9]])
    logp = ratios.log()
    ppo = Loss("ppo", {"clip_low_threshold": 0.8, "clip_high_threshold": 1.28})
    pos, d_pos = ppo(logp, _inputs(old, torch.tensor([1.0])))
    # A > 0: min(r, clip(r, 0.8, 1.28)) -> 1.28, 0.5, 1.1, 0.9
    assert (-pos[0]).tolist() == pytest.approx([1.28, 0.5, 1.1, 0.9])
    assert d_pos["clip_fraction"].tolist() == [[1.0, 0.0, 0.0, 0.0]]
    neg, d_neg = ppo(logp, _inputs(old, torch.tensor([-1.0])))
    # A < 0: min(-r, -clip(r)) = -max(r, clip(r)) -> -1.5, -0.8, -1.1, -0.9
    assert (-neg[0]).tolist() == pytest.approx([-1.5, -0.8, -1.1, -0.9])
    assert d_neg["clip_fraction"].tolist() == [[0.0, 1.0, 0.0, 0.0]]
    assert Loss("ppo").config == {"clip_low_threshold": 0.8, "clip_high_threshold": 1.2}  # Tinker's defaults
    assert Loss("ppo_clip").name == "ppo"  # the earlier name still reads


def test_k3_kl_and_the_loss_chosen_once():
    logp = torch.tensor([[math.log(0.5)]])
    ref = torch.tensor([[math.log(0.25)]])
    # d = log(0.25/0.5) = -log 2: exp(d) - d - 1 = 0.5 + 0.6931 - 1 = 0.1931
    assert k3_kl(logp, ref).item() == pytest.approx(0.5 + math.log(2) - 1)
    assert k3_kl(logp, logp).item() == 0.0
    for estimator in ("k3", "k3_is"):  # on policy (ratio 1) the two have the same value
        loss = Loss("importance_sampling", kl_coef=0.1, kl_estimator=estimator)
        loss_B_T, diagnostics = loss(logp, _inputs(logp, torch.tensor([1.0]), ref=ref))
        assert loss_B_T.item() == pytest.approx(-1.0 + 0.1 * (0.5 + math.log(2) - 1))
        assert diagnostics["kl_reference"].item() == pytest.approx(0.5 + math.log(2) - 1)
    assert Loss("ppo_clip")(logp, _inputs(logp, torch.tensor([1.0])))[0].item() == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="unknown loss"):
        Loss("no_such_loss")
    with pytest.raises(ValueError, match="unknown config"):
        Loss("ppo", {"clip_low": 0.2})
    with pytest.raises(ValueError, match="beta"):
        Loss("dro")


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
    # Two datums packed in one row: each sequence's product is its own (segments 0 and 1).
    w, _ = truncated_is_weights(torch.tensor([[math.log(0.6), math.log(0.2)]]),
                                torch.tensor([[math.log(0.3), math.log(0.4)]]), torch.ones(1, 2), cap=10.0,
                                level="sequence", segments_B_T=torch.tensor([[0, 1]]))
    assert w[0].tolist() == pytest.approx([2.0, 0.5])


def test_tis_loss_is_the_is_loss_until_the_cap_then_scales_the_gradient_down():
    sampler = torch.tensor([[math.log(0.25), math.log(0.2)]])
    adv = torch.tensor([2.0])
    grads = {}
    for cap in (None, 10.0, 1.5):
        logp = torch.tensor([[math.log(0.5), math.log(0.2)]], requires_grad=True)
        loss_B_T, diagnostics = Loss("importance_sampling", tis_cap=cap)(logp, _inputs(sampler, adv))
        loss_B_T.sum().backward()
        grads[cap] = logp.grad[0].tolist()
        if cap is not None:
            # The ratio is against the trainer's own logprobs; the mismatch is the (capped) weight.
            assert loss_B_T[0].tolist() == pytest.approx([-2.0 * min(2.0, cap), -2.0])
            assert diagnostics["tis_truncated"].tolist() == [[float(cap < 2.0), 0.0]]
    assert grads[10.0] == pytest.approx(grads[None])  # ratios 2 and 1, under the cap: the same
    assert grads[1.5] == pytest.approx([-3.0, -2.0])  # the first token's weight capped at 1.5


def _loss_and_grad(loss, logp_values, sampler_values, adv, ref_values=None):
    logp = torch.tensor([logp_values], requires_grad=True)
    ref = None if ref_values is None else torch.tensor([ref_values])
    loss_B_T, diagnostics = loss(logp, _inputs(torch.tensor([sampler_values]), torch.tensor([adv]), ref=ref))
    loss_B_T.sum().backward()
    return loss_B_T[0].tolist(), logp.grad[0].tolist(), diagnostics


def test_each_loss_against_a_hand_computation():
    lp, q = [math.log(0.5), math.log(0.2), math.log(0.9)], [math.log(0.25), math.log(0.4), math.log(0.9)]
    # rho = p / q = 2, 0.5, 1. A = 2 on every token.
    value, grad, _ = _loss_and_grad(Loss("cross_entropy"), lp, q, 2.0)
    assert value == pytest.approx([math.log(2), math.log(5), -math.log(0.9)])
    assert grad == pytest.approx([-1] * 3)
    value, grad, _ = _loss_and_grad(Loss("importance_sampling"), lp, q, 2.0)
    assert value == pytest.approx([-4.0, -1.0, -2.0]) and grad == pytest.approx([-4.0, -1.0, -2.0])
    # ppo 0.8 / 1.2: rho 2 clipped (A > 0: the min is 1.2 A, no gradient); 0.5 and 1 inside.
    value, grad, d = _loss_and_grad(Loss("ppo"), lp, q, 2.0)
    assert value == pytest.approx([-2.4, -1.0, -2.0]) and grad == pytest.approx([0.0, -1.0, -2.0])
    assert d["clip_fraction"].tolist() == [[1.0, 0.0, 0.0]]
    # cispo 0 / 4: sg(clip(rho)) A log p; the gradient is -clip(rho) A, never zero.
    value, grad, d = _loss_and_grad(Loss("cispo"), lp, q, 2.0)
    assert value == pytest.approx([-2 * 2 * lp[0], -0.5 * 2 * lp[1], -1 * 2 * lp[2]])
    assert grad == pytest.approx([-4.0, -1.0, -2.0]) and not d["clip_fraction"].any()
    value, grad, d = _loss_and_grad(Loss("cispo", {"clip_high_threshold": 1.5}), lp, q, 2.0)
    assert grad == pytest.approx([-3.0, -1.0, -2.0]) and d["clip_fraction"].tolist() == [[1.0, 0.0, 0.0]]
    # dro beta 0.1: -(A log p - beta/2 (log p - log q)^2); gradient -A + beta (log p - log q).
    value, grad, _ = _loss_and_grad(Loss("dro", {"beta": 0.1}), lp, q, 2.0)
    assert value == pytest.approx([-(2 * a - 0.05 * (a - b) ** 2) for a, b in zip(lp, q, strict=True)])
    assert grad == pytest.approx([-2 + 0.1 * (a - b) for a, b in zip(lp, q, strict=True)])


def test_the_two_kl_estimators_have_the_gradients_of_the_two_directions():
    # On policy (q = p, A = 0): the KL term alone. d = log ref - log p.
    lp, ref = [math.log(0.5), math.log(0.2)], [math.log(0.25), math.log(0.4)]
    d = [r - a for a, r in zip(lp, ref, strict=True)]
    _, grad, _ = _loss_and_grad(Loss("importance_sampling", kl_coef=1.0, kl_estimator="k3"), lp, lp, 0.0, ref)
    # k3 = e^d - d - 1: d/d log p = 1 - e^d, whose expectation is the gradient of KL(ref || p).
    assert grad == pytest.approx([1 - math.exp(x) for x in d])
    _, grad, _ = _loss_and_grad(Loss("importance_sampling", kl_coef=1.0), lp, lp, 0.0, ref)
    # k3 x rho: d/d log p = (1 - e^d) + k3 = -d = log p - log ref, the gradient of KL(p || ref).
    assert grad == pytest.approx([-x for x in d])


def _c(text, n, finish="stop"):
    return Completion(tuple(range(n)), (0.0,) * n, text, finish)


def test_rewards_correct_format_and_self_improving_efficiency():
    assert format_reward(_c("<think>x</think> $\\boxed{3}$", 5)) == 1.0
    assert format_reward(_c("<think>x</think> $\\boxed{3}$", 5, "length")) == 0.0
    assert format_reward(_c("<think>\\boxed{3}", 5)) == 0.0  # only inside an unfinished thought
    assert efficiency_reward(True, 40, 30) == 0.75 and efficiency_reward(False, 10, 30) == 0.0

    problem = Problem("p1", "1+2?", "3")
    grader = Grader(processes=0)
    rewards = RewardSet({"correct": 1.0, "efficiency": 1.0})
    group = [_c("\\boxed{3}", 40), _c("\\boxed{4}", 10), _c("\\boxed{3}", 20), _c("\\boxed{3}", 10, "length")]
    graded = rewards.score(problem, group, grader.grade(problem, group))
    assert rewards.state_dict() == {"efficiency": {"p1": 20}}  # the truncated one does not set the record
    assert [g.reward_parts["efficiency"] for g in graded] == [0.5, 0.0, 1.0, 0.0]
    assert [g.reward for g in graded] == [1.5, 0.0, 2.0, 1.0]
    # Later, a longer best answer does not raise the record; a shorter one lowers it.
    later = [_c("\\boxed{3}", 25), _c("\\boxed{3}", 16)]
    graded = rewards.score(problem, later, grader.grade(problem, later))
    assert rewards.state_dict() == {"efficiency": {"p1": 16}}
    assert [g.reward_parts["efficiency"] for g in graded] == [16 / 25, 1.0]
    only_correct = RewardSet({"correct": 1.0}).score(problem, group, grader.grade(problem, group))
    assert [g.reward for g in only_correct] == [1.0, 0.0, 1.0, 1.0]
    restored = RewardSet({"correct": 1.0, "efficiency": 1.0})
    restored.load_state_dict(rewards.state_dict())
    assert restored.state_dict() == rewards.state_dict()
    with pytest.raises(ValueError, match="unknown"):
        RewardSet({"length": 1.0})


def test_substeps_split_whole_groups():
    assert [len(p) for p in split_groups(list(range(7)), 3)] == [3, 2, 2]
    assert split_groups(list(range(2)), 4) == [[0], [1]]  # never an empty part
