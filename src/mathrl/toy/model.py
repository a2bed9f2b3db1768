"""The embedded tiny model: a real ``Qwen3ForCausalLM``, about 1M parameters."""

from __future__ import annotations

from transformers import GenerationConfig, Qwen3Config, Qwen3ForCausalLM
from transformers.tokenization_utils_base import PreTrainedTokenizerBase


def tiny_config(tokenizer: PreTrainedTokenizerBase) -> Qwen3Config:
    """Qwen3 with the real architecture's features (GQA, QK-norm, RoPE, SwiGLU, tied embeddings)
    at toy width. 4,096 positions so real benchmark prompts and long generations still fit."""
    return Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=384,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,
        max_position_embeddings=4096,
        rope_theta=10_000.0,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def new_tiny_model(tokenizer: PreTrainedTokenizerBase) -> Qwen3ForCausalLM:
    model = Qwen3ForCausalLM(tiny_config(tokenizer))
    model.generation_config = GenerationConfig(
        eos_token_id=[tokenizer.eos_token_id, tokenizer.pad_token_id],
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
    )
    return model
