"""The memory-bounded training paths compute what the plain ones do: chunked log-probabilities
and entropy, activation checkpointing, micro-batches by count or token budget, SFT packing,
mixed precision and the adapter-off KL reference (fp32, tiny model)."""

import math
import random

import pytest
import torch

from mathrl.models import load_model
from mathrl.train.learner import Datum
from mathrl.train.local import Plan, accumulate, reference_policy
from mathrl.train.losses import Loss
from mathrl.train.policy import (
    LogprobForward,
    LoraSettings,
    load_policy,
    set_activation_checkpointing,
    token_logprobs_and_entropy,
)
from mathrl.train.rl import token_weight
from mathrl.train.sft import Example, sft_datums

CPU = torch.device("cpu")


def full_logits_reference(model, ids_B_T, attention_B_T, temperature):
    """Today's computation before the change: every position's full-vocabulary logits at once."""
    logits = model(input_ids=ids_B_T, attention_mask=attention_B_T, use_cache=False).logits[:, :-1].float()
    logp_all = torch.log_softmax(logits / temperature, -1)
    logp = logp_all.gather(-1, ids_B_T[:, 1:, None])[..., 0]
    ent = -(logp_all.exp() * logp_all).sum(-1).detach()
    pad = logp.new_zeros(logp.shape[0], 1)
    return torch.cat([pad, logp], 1), torch.cat([pad, ent], 1)


def _policy(seed=0, rank=8, dropout=0.0):
    torch.manual_seed(seed)
    model = load_policy("tiny", "lora", LoraSettings(rank=rank, dropout=dropout), CPU, torch.float32)
    with torch.no_grad():  # a trained-looking adapter: B is zero at init, which would hide bugs
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    return model


def _batch(n=5, seed=1, vocab=300):
    rng = random.Random(seed)
    lengths = [rng.randint(6, 30) for _ in range(n)]
    width = max(lengths)
    ids = torch.zeros((n, width), dtype=torch.long)
    attention = torch.zeros((n, width), dtype=torch.long)
    for b, length in enumerate(lengths):
        ids[b, :length] = torch.tensor([rng.randrange(vocab) for _ in range(length)])
        attention[b, :length] = 1
    return ids, attention


def _close(a, b, rel=1e-5):
    """Equal up to float32 summation order: the largest difference against the largest entry."""
    return (a - b).abs().max().item() <= rel * b.abs().max().item() + 1e-7


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("chunk", [1, 7, 1024])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_chunked_logprobs_and_entropy_equal_the_full_logits_ones(chunk, temperature):
    model = _policy()
    ids, attention = _batch()
    target = attention.bool().clone()
    target[:, :3] = False  # a "prompt" the loss does not cover
    ref_logp, ref_ent = full_logits_reference(model, ids, attention, temperature)
    (ref_logp * target).sum().backward()
    expected = _grads(model)
    model.zero_grad(set_to_none=True)
    logp, ent = token_logprobs_and_entropy(
        model, ids, attention, temperature, target_B_T=target, chunk_tokens=chunk
    )
    (logp * target).sum().backward()
    assert torch.allclose(logp[target], ref_logp[target], atol=1e-5)
    assert torch.allclose(ent[target], ref_ent[target], atol=1e-5)
    assert (logp[~target] == 0).all() and (ent[~target] == 0).all()  # only the targets are computed
    got = _grads(model)
    assert got.keys() == expected.keys() and len(got) > 0
    for name in expected:
        assert _close(got[name], expected[name]), name


def test_activation_checkpointing_gives_the_same_gradients_with_lora_and_dropout():
    ids, attention = _batch()
    results = []
    for checkpointing in (False, True):
        model = _policy(dropout=0.1)
        set_activation_checkpointing(model, checkpointing)
        torch.manual_seed(3)  # the same dropout masks: non-reentrant checkpointing replays the RNG
        logp, _ = token_logprobs_and_entropy(model, ids, attention, entropy=False)
        (logp * attention).sum().backward()
        results.append((logp.detach(), _grads(model)))
    (logp_a, grads_a), (logp_b, grads_b) = results
    assert torch.equal(logp_a, logp_b)
    for name in grads_a:
        assert _close(grads_a[name], grads_b[name]), name


def _rollouts(normalization, n=9, seed=2, max_tokens=32):
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        prompt = [rng.randrange(300) for _ in range(rng.randint(3, 8))]
        completion = [rng.randrange(300) for _ in range(rng.randint(2, 20))]
        logprobs = tuple(-rng.random() * 3 for _ in completion)
        rows.append((prompt, completion, logprobs, (-1) ** i * rng.random()))
    total = sum(len(c) for _, c, _, _ in rows)
    return [Datum.from_sequence(p + c, len(p), token_weight(len(c), n, total, max_tokens, normalization),
                                lp, a) for p, c, lp, a in rows]


@pytest.mark.parametrize("normalization, tis", [("token_sum", None), ("token_mean", None),
                                               ("sequence_mean", None), ("token_mean", "token"),
                                               ("token_mean", "sequence")])
def test_grpo_gradient_is_the_same_for_every_micro_batch_plan(normalization, tis):
    seqs = _rollouts(normalization)
    # Caps that cut some tokens (or sequences) and not others: these sequences' log ratios
    # (trainer - sampler, summed) run from -55 to -252.
    cap = {None: None, "token": 1.5, "sequence": math.exp(-60)}[tis]
    loss_fn = Loss("importance_sampling", tis_cap=cap, tis_level=tis or "token")
    plans = [
        dict(micro_batch_size=1),
        dict(micro_batch_size=3),
        dict(micro_batch_size=len(seqs)),
        dict(micro_batch_size=64, micro_batch_tokens=40),
        dict(micro_batch_size=64, micro_batch_tokens=90),
    ]
    grads, micro_counts = [], []
    for plan in plans:
        model = _policy()
        out = accumulate(LogprobForward(model), seqs, loss_fn, Plan(**plan), 0, CPU).metrics
        grads.append(_grads(model))
        micro_counts.append(out["train/micro_batches"])
        if tis:
            assert 0 < out["train/tis_truncated"] < 1
    assert micro_counts[:3] == [9, 3, 1] and micro_counts[3] > micro_counts[4] > 1
    for other in grads[1:]:
        for name in grads[0]:
            assert _close(other[name], grads[0][name]), name


def _examples(n=7, seed=4):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        length = rng.randint(5, 25)
        ids = tuple(rng.randrange(300) for _ in range(length))
        start = rng.randint(1, length - 2)
        out.append(Example(ids, tuple([False] * start + [True] * (length - start))))
    return out


def test_sft_gradient_is_the_same_for_every_micro_batch_plan_and_with_packing():
    batch = _examples()
    plans = [
        dict(micro_batch_size=1),
        dict(micro_batch_size=3),
        dict(micro_batch_size=len(batch)),
        dict(micro_batch_size=64, micro_batch_tokens=50),
        dict(micro_batch_size=64, micro_batch_tokens=100),
        dict(micro_batch_size=1, packing=True, max_length=40),
        dict(micro_batch_size=64, packing=True, max_length=40),
    ]
    grads, losses, counts = [], [], []
    for plan in plans:
        packing, max_length = plan.pop("packing", False), plan.pop("max_length", None)
        model = _policy()
        out = accumulate(LogprobForward(model), sft_datums(batch), Loss("cross_entropy", entropy=False),
                         Plan(**plan, pack_to=max_length if packing else None), 0, CPU).metrics
        loss, n_micro = out["train/loss"], out["train/micro_batches"]
        grads.append(_grads(model))
        losses.append(loss)
        counts.append(n_micro)
    assert counts[:3] == [7, 3, 1] and counts[3] > counts[4] > 1
    assert counts[5] < 7 and counts[6] == 1  # packed: fewer rows than documents
    for other, loss in zip(grads[1:], losses[1:], strict=True):
        assert loss == pytest.approx(losses[0], rel=1e-5)
        for name in grads[0]:
            assert _close(other[name], grads[0][name]), name


def test_bf16_base_weights_train_fp32_adapters_with_fp32_optimizer_state():
    model = load_policy("tiny", "lora", LoraSettings(rank=4), CPU, torch.bfloat16)
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    frozen = [p for p in model.parameters() if not p.requires_grad]
    assert trainable and all(p.dtype == torch.float32 for p in trainable.values())
    assert frozen and all(p.dtype == torch.bfloat16 for p in frozen)
    ids, attention = _batch(n=2)
    logp, _ = token_logprobs_and_entropy(model, ids, attention, entropy=False)
    assert logp.dtype == torch.float32  # the loss math is fp32 whatever the weights
    logp.sum().backward()
    optimizer = torch.optim.AdamW(list(trainable.values()), lr=1e-3)
    optimizer.step()
    state = next(iter(optimizer.state.values()))
    assert state["exp_avg"].dtype == torch.float32


def test_the_kl_reference_of_a_new_adapter_is_the_base_model_without_a_copy():
    model = _policy()
    ids, attention = _batch(n=3)
    base = load_model("tiny", CPU, torch.float32)
    expected, _ = token_logprobs_and_entropy(base, ids, attention, entropy=False)
    reference = reference_policy(model, new_adapter=True)
    with torch.no_grad(), reference() as ref_model:
        assert ref_model is model
        got, _ = token_logprobs_and_entropy(ref_model, ids, attention, entropy=False)
    assert torch.allclose(got, expected, atol=1e-6)
    trained, _ = token_logprobs_and_entropy(model, ids, attention, entropy=False)
    assert not torch.allclose(trained, expected, atol=1e-3)  # the adapter is back on afterwards
