"""The trainable model: base weights, optionally a LoRA adapter (new or loaded), and the
per-token log-probabilities that both the SFT and the RL losses are written in."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch.utils.checkpoint import checkpoint
from transformers import PreTrainedModel

from mathrl.errors import UserError
from mathrl.models import load_model


@dataclass(frozen=True)
class LoraSettings:
    rank: int = 32
    alpha: int | None = None  # None: 2 x rank
    dropout: float = 0.0
    # "all-linear": every linear layer of the blocks (not the LM head), as the studies (and
    # the LoRA-without-regret findings) recommend; or a list of module names.
    target_modules: tuple[str, ...] = ("all-linear",)

    def __post_init__(self):
        if self.rank < 1:
            raise ValueError(f"lora.rank must be >= 1, got {self.rank}")


def load_policy(
    model: str,
    finetune: Literal["lora", "full"],
    lora: LoraSettings,
    device: torch.device,
    dtype: torch.dtype,
    adapter: str | None = None,
) -> PreTrainedModel:
    """The model to train, in train mode.

    ``finetune="lora"``: a new adapter of ``lora``'s shape on frozen base weights, or, with
    ``adapter``, that saved adapter made trainable again (SFT -> RL, or continued RL).
    ``finetune="full"``: every weight trains; ``model`` may be a full-weight checkpoint folder.
    """
    if finetune == "full" and adapter:
        raise UserError(
            "adapter= applies to finetune: lora; for full fine-tuning pass the checkpoint folder as model="
        )
    try:
        base = load_model(model, device, dtype)
    except (OSError, ValueError) as err:
        raise UserError(f"cannot load model {model!r}: {err}") from None
    if finetune == "full":
        base.train()
        return base
    import warnings

    from peft import LoraConfig, PeftModel, get_peft_model

    # peft 0.21 reads transformers 5's deprecated ``is_gradient_checkpointing``: noise, not news.
    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated")
    if adapter:
        if not (Path(adapter) / "adapter_config.json").is_file():
            raise UserError(f"adapter={adapter}: no adapter_config.json there")
        policy = PeftModel.from_pretrained(base, adapter, is_trainable=True)
    else:
        targets = lora.target_modules
        config = LoraConfig(
            r=lora.rank,
            lora_alpha=lora.alpha or 2 * lora.rank,
            lora_dropout=lora.dropout,
            target_modules="all-linear" if targets == ("all-linear",) else list(targets),
            task_type="CAUSAL_LM",
        )
        policy = get_peft_model(base, config)
    policy.to(device)
    policy.train()
    return policy


def trainable_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


# Tokens per LM-head chunk: the logits of one chunk are all that exist at a time, so at Qwen3's
# 151,936-token vocabulary 512 rows hold 0.3 GB in fp32 (a few such buffers live at once: the
# log-softmax, its gradient), whatever the batch. A 512 x hidden x vocabulary product still
# fills a GPU; larger chunks buy little speed for their memory.
DEFAULT_CHUNK_TOKENS = 512


def set_activation_checkpointing(model: torch.nn.Module, enabled: bool) -> None:
    """Recompute each decoder layer's activations in the backward pass instead of keeping them
    (non-reentrant, so it works with frozen embeddings and LoRA, and keeps dropout's RNG)."""
    if not enabled:
        return
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    base.config.use_cache = False
    if hasattr(base, "activation_checkpointing_enable"):
        base.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:  # transformers before 5.2x: the same switch under its earlier name
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def token_logprobs(
    model: PreTrainedModel,
    input_ids_B_T: torch.Tensor,
    attention_B_T: torch.Tensor | None,
    temperature: float = 1.0,
    target_B_T: torch.Tensor | None = None,
    position_ids_B_T: torch.Tensor | None = None,
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
    target_ids_B_T: torch.Tensor | None = None,
) -> torch.Tensor:
    """``logprobs_B_T[b, t]``: log p(token t | tokens < t); position 0 has no prediction and is 0.

    Aligned with the input so a target mask over the input (assistant or completion tokens)
    applies as is; with ``target_B_T`` only those positions are computed (the rest are 0).
    Padding must be on the right. ``temperature`` scales the logits as the sampler did, so RL's
    ratios compare like with like. See :func:`token_logprobs_and_entropy` for the memory bound.
    """
    return token_logprobs_and_entropy(model, input_ids_B_T, attention_B_T, temperature, entropy=False,
                                      target_B_T=target_B_T, position_ids_B_T=position_ids_B_T,
                                      chunk_tokens=chunk_tokens, target_ids_B_T=target_ids_B_T)[0]


def token_logprobs_and_entropy(
    model: PreTrainedModel,
    input_ids_B_T: torch.Tensor,
    attention_B_T: torch.Tensor | None,
    temperature: float = 1.0,
    entropy: bool = True,
    target_B_T: torch.Tensor | None = None,
    position_ids_B_T: torch.Tensor | None = None,
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
    target_ids_B_T: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """:func:`token_logprobs` and, with ``entropy``, each position's predictive entropy (no grad).

    The full-vocabulary logits are never materialised: the decoder's final hidden states are
    computed once, then the LM head, temperature, log-softmax and gather run on ``chunk_tokens``
    target positions at a time under activation checkpointing, so the backward pass recomputes a
    chunk's logits instead of keeping them. Peak memory is the hidden states plus one chunk of
    fp32 logits, not batch x length x vocabulary. The loss math is fp32 whatever the weights.

    ``attention_B_T=None`` with ``position_ids_B_T`` that restart at 0 is a packed row: each
    document attends only to itself (transformers' packed-sequence masks). ``target_ids_B_T``:
    the token scored at each position when it is not the input token there (a Tinker datum may
    score any token); None: the input's own tokens.
    """
    targets_B_T = (input_ids_B_T if target_ids_B_T is None else target_ids_B_T)[:, 1:]
    wanted_B_T = torch.ones_like(targets_B_T, dtype=torch.bool) if target_B_T is None else target_B_T[:, 1:]
    head = model.get_output_embeddings()
    logps, ents = [], []
    with _compute_precision(head.weight):
        hidden_B_T_H = model.get_decoder()(input_ids=input_ids_B_T, attention_mask=attention_B_T,
                                           position_ids=position_ids_B_T, use_cache=False).last_hidden_state
        # Position t-1's hidden state predicts token t: keep only the rows a target needs.
        rows_N_H = hidden_B_T_H[:, :-1][wanted_B_T]
        targets_N = targets_B_T[wanted_B_T]
        for start in range(0, rows_N_H.shape[0], chunk_tokens):
            piece = (rows_N_H[start:start + chunk_tokens], targets_N[start:start + chunk_tokens])
            if torch.is_grad_enabled() and rows_N_H.requires_grad:
                logp, ent = checkpoint(_head_logprobs, head, *piece, temperature, entropy,
                                       use_reentrant=False)
            else:
                logp, ent = _head_logprobs(head, *piece, temperature, entropy)
            logps.append(logp)
            ents.append(ent)
    logprobs_B_T = hidden_B_T_H.new_zeros(input_ids_B_T.shape, dtype=torch.float32)
    logprobs_B_T[:, 1:][wanted_B_T] = torch.cat(logps) if logps else logprobs_B_T.new_zeros(0)
    if not entropy:
        return logprobs_B_T, None
    entropy_B_T = torch.zeros_like(logprobs_B_T)
    entropy_B_T[:, 1:][wanted_B_T] = torch.cat(ents) if ents else entropy_B_T.new_zeros(0)
    return logprobs_B_T, entropy_B_T


class LogprobForward(torch.nn.Module):
    """:func:`token_logprobs_and_entropy` of ``model`` as a module, the one call the trainers
    make: DDP and FSDP act on a module's forward (DDP readies its gradient reduction there, FSDP
    gathers the root's weights), so this is what several processes wrap."""

    def __init__(self, model: PreTrainedModel):
        super().__init__()
        self.model = model

    def forward(self, input_ids_B_T, attention_B_T, temperature: float = 1.0, entropy: bool = True,
                target_B_T=None, position_ids_B_T=None, chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
                target_ids_B_T=None):
        return token_logprobs_and_entropy(self.model, input_ids_B_T, attention_B_T, temperature, entropy,
                                          target_B_T=target_B_T, position_ids_B_T=position_ids_B_T,
                                          chunk_tokens=chunk_tokens, target_ids_B_T=target_ids_B_T)


def _compute_precision(frozen_weight: torch.Tensor):
    """Mixed precision the usual way: with bf16/fp16 base weights, run the forward under autocast
    in that dtype, so the fp32 LoRA weights (and their optimizer state) stay fp32 while their
    matmuls, and the activations kept for the backward pass, are half precision (without it each
    LoRA layer keeps an fp32 copy of its input). fp32 weights: plain fp32, nothing changes."""
    dtype = frozen_weight.dtype
    if dtype not in (torch.bfloat16, torch.float16):
        return contextlib.nullcontext()
    return torch.autocast(frozen_weight.device.type, dtype=dtype)


def _head_logprobs(head: torch.nn.Module, rows_N_H: torch.Tensor, targets_N: torch.Tensor,
                   temperature: float, entropy: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probability of each target under ``head(rows) / temperature`` in fp32, and (no grad)
    the entropy of that distribution."""
    logits_N_V = head(rows_N_H).float()
    if temperature != 1.0:
        logits_N_V = logits_N_V / temperature
    logp_N_V = torch.log_softmax(logits_N_V, -1)
    logp_N = logp_N_V.gather(-1, targets_N[:, None])[:, 0]
    if not entropy:
        return logp_N, None
    with torch.no_grad():  # in place: one more (N, V) buffer, not two
        ent_N = -logp_N_V.exp().mul_(logp_N_V).sum(-1)
    return logp_N, ent_N
