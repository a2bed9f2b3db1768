"""The shipped tokenizer and chat template behave like Qwen's."""

import pytest

from mathrl.models import load_tokenizer

EXCHANGE = [
    {"role": "system", "content": "Please reason step by step, and put your final answer within \\boxed{}."},
    {"role": "user", "content": "Compute $2 + 3$."},
    {"role": "assistant", "content": "<think>\n2 + 3 = 5\n</think>\n\nThe answer is $\\boxed{5}$."},
]


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("tiny")


def test_renders_system_user_assistant_with_thinking(tok):
    text = tok.apply_chat_template(EXCHANGE, tokenize=False)
    assert text == (
        "<|im_start|>system\nPlease reason step by step, and put your final answer within "
        "\\boxed{}.<|im_end|>\n"
        "<|im_start|>user\nCompute $2 + 3$.<|im_end|>\n"
        "<|im_start|>assistant\n<think>\n2 + 3 = 5\n</think>\n\nThe answer is $\\boxed{5}$."
        "<|im_end|>\n")


def test_generation_prompt_and_thinking_switch(tok):
    on = tok.apply_chat_template(EXCHANGE[:2], tokenize=False, add_generation_prompt=True)
    off = tok.apply_chat_template(EXCHANGE[:2], tokenize=False, add_generation_prompt=True,
                                  enable_thinking=False)
    assert on.endswith("<|im_end|>\n<|im_start|>assistant\n")
    assert off == on + "<think>\n\n</think>\n\n"


def test_assistant_mask_covers_the_reply_and_its_stop_token(tok):
    enc = tok.apply_chat_template(EXCHANGE, return_dict=True, return_assistant_tokens_mask=True)
    ids, mask = enc["input_ids"], enc["assistant_masks"]
    learned = [t for t, m in zip(ids, mask, strict=True) if m]
    assert tok.decode(learned) == EXCHANGE[2]["content"] + "<|im_end|>"
    assert learned[-1] == tok.eos_token_id
    # Every masked position is one contiguous span.
    first, last = mask.index(1), len(mask) - 1 - mask[::-1].index(1)
    assert all(mask[first:last + 1])


def test_special_and_thinking_tokens(tok):
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    ids = tok("<think>\n7\n</think>", add_special_tokens=False)["input_ids"]
    assert tok.convert_ids_to_tokens(ids)[0] == "<think>" and len(ids) == 5
    # Thinking tags are not special: they survive skip_special_tokens, as in Qwen3.
    assert tok.decode(ids, skip_special_tokens=True) == "<think>\n7\n</think>"
    assert "<|im_end|>" not in tok.decode([tok.eos_token_id], skip_special_tokens=True)


def test_each_digit_is_its_own_token(tok):
    pieces = tok.convert_ids_to_tokens(tok("12345 + 2026", add_special_tokens=False)["input_ids"])
    digits = [p.lstrip("Ġ") for p in pieces if p.lstrip("Ġ").isdigit()]
    assert digits == list("123452026")


@pytest.mark.parametrize("text", ["Find $\\frac{3}{4}$ of 1,000 cafés 😀", "\\sqrt{x^2+1} \t\n", ""])
def test_any_text_round_trips(tok, text):
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text
