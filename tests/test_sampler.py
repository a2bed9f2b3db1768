"""The in-process sampler returns token ids and logprobs that training can trust."""

import pytest
import torch

from mathrl.prompts import PromptProtocol
from mathrl.sampling import SamplingParams
from mathrl.sampling.hf import HFSampler, count_thinking_tokens
from mathrl.tasks import arith

PROBLEMS = arith.generate("test", 6, seed=0, levels=[1, 2, 3])


def _teacher_forced_logprobs(model, prompt_ids, completion_ids, temperature=1.0):
    ids = torch.tensor([prompt_ids + list(completion_ids)])
    with torch.no_grad():
        logits = model(ids).logits[0, len(prompt_ids) - 1:-1].float() / temperature
    return torch.log_softmax(logits, -1).gather(-1, torch.tensor(completion_ids)[:, None])[:, 0]


def test_greedy_is_deterministic_and_grouped_by_prompt(tiny):
    sampler = HFSampler(*tiny, batch_size=4)  # forces several batches with left padding
    prompts = [PromptProtocol().messages(p) for p in PROBLEMS]
    params = SamplingParams(temperature=0.01, max_tokens=64)
    first = sampler.sample(prompts, 2, params)
    second = sampler.sample(prompts, 2, params)
    assert [[c.token_ids for c in g] for g in first] == [[c.token_ids for c in g] for g in second]
    assert len(first) == len(PROBLEMS) and all(len(g) == 2 for g in first)
    assert all(g[0].token_ids == g[1].token_ids for g in first)  # greedy: samples agree
    alone = sampler.sample(prompts[3:4], 1, params)[0][0]
    assert alone.token_ids == first[3][0].token_ids  # padding in a batch changes nothing


@pytest.mark.parametrize("temperature", [0.0, 0.7, 1.0])
def test_logprobs_match_a_teacher_forced_forward_pass(tiny, temperature):
    """RL forms importance ratios against these: they must be the model's own log-softmax."""
    model, tokenizer = tiny
    sampler = HFSampler(model, tokenizer, batch_size=8)
    prompts = [PromptProtocol().messages(p) for p in PROBLEMS]
    params = SamplingParams(temperature=temperature, max_tokens=48, seed=1)
    groups = sampler.sample(prompts, 2, params)
    for prompt, group in zip(prompts, groups, strict=True):
        prompt_ids = sampler.encode(prompt, params)
        for c in group:
            assert c.prompt_n_tokens == len(prompt_ids)
            ref = _teacher_forced_logprobs(model, prompt_ids, c.token_ids, temperature or 1.0)
            assert torch.allclose(torch.tensor(c.logprobs), ref, atol=2e-4)


def test_seeded_sampling_reproduces_and_differs_across_seeds(tiny):
    sampler = HFSampler(*tiny)
    prompts = [PromptProtocol().messages(p) for p in PROBLEMS[:3]]

    def run(seed):
        return [[c.token_ids for c in g] for g in
                sampler.sample(prompts, 4, SamplingParams(temperature=1.0, max_tokens=40, seed=seed))]

    assert run(5) == run(5)
    assert run(5) != run(6)


def test_finish_reasons_and_counts(tiny):
    model, tokenizer = tiny
    sampler = HFSampler(model, tokenizer)
    prompts = [PromptProtocol().messages(p) for p in PROBLEMS[:4]]
    cut = sampler.sample(prompts, 1, SamplingParams(temperature=0, max_tokens=5))
    assert all(g[0].finish_reason == "length" and g[0].n_tokens == 5 for g in cut)
    full = sampler.sample(prompts, 1, SamplingParams(temperature=0, max_tokens=256))
    for (c,) in full:
        assert c.finish_reason == "stop" and c.token_ids[-1] == tokenizer.eos_token_id
        assert c.text.startswith("<think>") and "<|im_end|>" not in c.text
        inside = c.text.split("<think>")[1].split("</think>")[0]
        assert c.n_thinking_tokens == len(tokenizer(inside, add_special_tokens=False)["input_ids"])


def test_stop_strings_end_the_text(tiny):
    sampler = HFSampler(*tiny)
    (c,), = sampler.sample([PromptProtocol().messages(PROBLEMS[0])], 1,
                           SamplingParams(temperature=0, max_tokens=128, stop=("</think>",)))
    assert c.finish_reason == "stop" and "</think>" not in c.text and c.text.startswith("<think>")


def test_prefill_is_shared_by_the_n_samples_of_a_prompt(tiny):
    model, tokenizer = tiny
    sampler = HFSampler(model, tokenizer, batch_size=64)
    calls = []
    hook = model.register_forward_pre_hook(lambda m, a, kw: calls.append(tuple(kw["input_ids"].shape)),
                                           with_kwargs=True)
    params = SamplingParams(temperature=1.5, max_tokens=24, seed=0)
    try:
        (group,) = sampler.sample([PromptProtocol().messages(PROBLEMS[2])], 8, params)
    finally:
        hook.remove()
    assert calls[0][0] == 1 and calls[0][1] > 1  # one prefill row for the prompt
    assert calls[1] == (8, 1)  # then 8 rows, one per sample
    assert len({c.token_ids for c in group}) > 1


def test_token_id_prompts_are_used_as_given(tiny):
    model, tokenizer = tiny
    sampler = HFSampler(model, tokenizer)
    params = SamplingParams(temperature=0, max_tokens=32)
    ids = sampler.encode(PromptProtocol().messages(PROBLEMS[1]), params)
    a = sampler.sample([ids], 1, params)[0][0]
    b = sampler.sample([PromptProtocol().messages(PROBLEMS[1])], 1, params)[0][0]
    assert a.token_ids == b.token_ids


@pytest.mark.parametrize("ids, expected", [
    ([7, 1, 1, 1, 8, 2], 3),   # <think> a b c </think> answer
    ([7, 1, 1], 2),            # truncated inside the thought
    ([1, 1, 8, 2], 2),         # <think> was in the prompt (Qwen3 thinking-2507 templates)
    ([1, 2, 3], 0),            # no thinking at all
])
def test_count_thinking_tokens(ids, expected):
    assert count_thinking_tokens(ids, 7, 8) == expected
    assert count_thinking_tokens(ids, None, None) == 0


def test_a_prompts_samples_depend_on_the_seed_and_prompt_alone(tiny):
    """Counter-based draws: the same prompt gives the same samples whatever it is batched with,
    whatever the batch size, in whatever order, so a batch split over processes samples what one
    process would."""
    model, tokenizer = tiny
    prompts = [PromptProtocol().messages(p) for p in PROBLEMS]
    params = SamplingParams(temperature=1.0, max_tokens=48, seed=7)
    whole = HFSampler(model, tokenizer, batch_size=24).sample(prompts, 4, params)
    small = HFSampler(model, tokenizer, batch_size=4).sample(prompts, 4, params)
    share = HFSampler(model, tokenizer, batch_size=24).sample(prompts[4:0:-2], 4, params)
    ids = [[c.token_ids for c in g] for g in whole]
    assert [[c.token_ids for c in g] for g in small] == ids
    assert [[c.token_ids for c in g] for g in share] == [ids[4], ids[2]]
    assert len({c for g in ids for c in g}) > len(PROBLEMS)  # the samples of a prompt differ
    twice = HFSampler(model, tokenizer, batch_size=24).sample([prompts[0], prompts[0]], 4, params)
    assert [[c.token_ids for c in g] for g in twice][0] == ids[0]
    assert twice[0] != twice[1]  # a prompt given twice is two draws, not one repeated


def test_inverse_cdf_draws_follow_the_distribution():
    from mathrl.sampling.hf import _draw, _uniform

    logits_S_V = torch.tensor([[0.0, 1.0, 2.0, float("-inf"), 0.5]]).repeat(40_000, 1)
    seeds_S = torch.arange(40_000)
    token_S, logp_S = _draw(logits_S_V, SamplingParams(temperature=1.0), _uniform(seeds_S, seeds_S * 7, 3))
    freq = torch.bincount(token_S, minlength=5).double() / 40_000
    want = torch.softmax(logits_S_V[0], -1).double()
    assert freq[3] == 0  # a masked token is never drawn
    assert torch.allclose(freq, want, atol=0.01)
    assert torch.allclose(logp_S, torch.log(want.float())[token_S])
    u = _uniform(seeds_S, seeds_S, 0)
    assert 0 <= u.min() and u.max() < 1 and abs(u.mean().item() - 0.5) < 0.01
