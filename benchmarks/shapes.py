"""Model shapes the benchmarks build with random weights (config only, no download).

The Qwen3 numbers are those of the released configs (vocabulary 151,936, head dim 128, GQA with
8 key-value heads); ``layers`` may be reduced to fit a CPU while keeping the hidden size and the
vocabulary, which are what the LM head's memory depends on.
"""

from __future__ import annotations

import torch

QWEN3 = {
    "qwen3-0.6b": dict(
        hidden_size=1024,
        intermediate_size=3072,
        num_hidden_layers=28,
        num_attention_heads=16,
        num_key_value_heads=8,
        tie_word_embeddings=True,
    ),
    "qwen3-4b": dict(
        hidden_size=2560,
        intermediate_size=9728,
        num_hidden_layers=36,
        num_attention_heads=32,
        num_key_value_heads=8,
        tie_word_embeddings=True,
    ),
    "qwen3-8b": dict(
        hidden_size=4096,
        intermediate_size=12288,
        num_hidden_layers=36,
        num_attention_heads=32,
        num_key_value_heads=8,
        tie_word_embeddings=False,
    ),
}
SHAPES = ("tiny", *QWEN3)


def build_model(
    shape: str, device: torch.device, dtype: torch.dtype, layers: int | None = None, seed: int = 0
):
    """A causal LM of ``shape`` in eval mode: the shipped tiny model, or a Qwen3-shaped one with
    random weights (``layers`` overrides its depth), and the tiny tokenizer, whose ids are valid
    in the larger vocabulary."""
    from mathrl.models import load_model, load_tokenizer

    tokenizer = load_tokenizer("tiny")
    if shape == "tiny":
        return load_model("tiny", device, dtype), tokenizer
    from transformers import Qwen3Config, Qwen3ForCausalLM

    settings = dict(
        QWEN3[shape], vocab_size=151936, head_dim=128, max_position_embeddings=40960, rope_theta=1_000_000.0
    )
    if layers is not None:
        settings["num_hidden_layers"] = layers
    torch.manual_seed(seed)
    config = Qwen3Config(**settings, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    with torch.device(device):
        model = Qwen3ForCausalLM(config).to(dtype).eval()
    return model, tokenizer
