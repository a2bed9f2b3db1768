"""The embedded model is a real Qwen3 checkpoint that loads through the standard code path."""

import json

import torch
from transformers import AutoModelForCausalLM, Qwen3ForCausalLM

from mathrl.models import TINY_PATH, load_model, load_tokenizer, resolve_model
from mathrl.prompts import SYSTEM_PROMPT
from mathrl.tasks import arith
from mathrl.toy.pretrain import REPORT_FILE, PretrainConfig
from mathrl.toy.tokenizer import build_tokenizer


def test_shipped_folder_is_a_standard_hf_checkpoint():
    names = {p.name for p in TINY_PATH.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "generation_config.json", REPORT_FILE} <= names
    config = json.loads((TINY_PATH / "config.json").read_text())
    assert config["architectures"] == ["Qwen3ForCausalLM"] and config["model_type"] == "qwen3"


def test_tiny_is_a_qwen3_of_about_a_million_parameters(tiny):
    model, tokenizer = tiny
    assert isinstance(model, Qwen3ForCausalLM)
    n = sum(p.numel() for p in model.parameters())
    assert 500_000 < n < 2_000_000
    assert model.config.vocab_size == len(tokenizer)
    assert model.config.num_key_value_heads < model.config.num_attention_heads  # GQA, as Qwen3


def test_tiny_and_its_path_load_through_the_same_code(tiny):
    model, _ = tiny
    by_path = load_model(str(TINY_PATH), torch.device("cpu"), torch.float32)
    assert resolve_model("tiny") == str(TINY_PATH)
    for (name, a), (_, b) in zip(model.state_dict().items(), by_path.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_save_and_load_give_identical_logits(tiny, tmp_path):
    model, tokenizer = tiny
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    ids = load_tokenizer(tmp_path)("Compute $12 + 30$.", return_tensors="pt")["input_ids"]
    assert ids.tolist() == tokenizer("Compute $12 + 30$.", return_tensors="pt")["input_ids"].tolist()
    with torch.no_grad():
        assert torch.equal(model(ids).logits, reloaded(ids).logits)


def test_shipped_tokenizer_is_what_the_pretrain_code_builds():
    """Guards against the generator or tokenizer code drifting from the shipped model."""
    cfg = PretrainConfig()
    corpus = (text for p in arith.generate("train", cfg.tokenizer_problems, seed=cfg.seed)
              for text in (p.problem, p.solution, SYSTEM_PROMPT))
    built = build_tokenizer(corpus, cfg.vocab_size)
    assert built.get_vocab() == load_tokenizer("tiny").get_vocab()
