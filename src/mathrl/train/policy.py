"""The trainable model: base weights, optionally a LoRA adapter (new or loaded), and the
per-token log-probabilities that both the SFT and the RL losses are written in."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
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


def token_logprobs(
    model: PreTrainedModel, input_ids_B_T: torch.Tensor, attention_B_T: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """``logprobs_B_T[b, t]``: log p(token t | tokens < t); position 0 has no prediction and is 0.

    Aligned with the input so a target mask over the input (assistant or completion tokens)
    applies as is. Padding must be on the right. ``temperature`` scales the logits as the
    sampler did, so RL's ratios compare like with like.
    """
    return token_logprobs_and_entropy(model, input_ids_B_T, attention_B_T, temperature, entropy=False)[0]


def token_logprobs_and_entropy(
    model: PreTrainedModel,
    input_ids_B_T: torch.Tensor,
    attention_B_T: torch.Tensor,
    temperature: float = 1.0,
    entropy: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """:func:`token_logprobs` and, with ``entropy``, each position's predictive entropy (no grad)."""
    logits_B_T_V = model(input_ids=input_ids_B_T, attention_mask=attention_B_T, use_cache=False).logits
    logits_B_T_V = logits_B_T_V[:, :-1].float()
    if temperature != 1.0:
        logits_B_T_V = logits_B_T_V / temperature
    targets_B_T = input_ids_B_T[:, 1:]
    logprobs = -F.cross_entropy(logits_B_T_V.transpose(1, 2), targets_B_T, reduction="none")
    logprobs_B_T = torch.cat([logprobs.new_zeros(logprobs.shape[0], 1), logprobs], dim=1)
    if not entropy:
        return logprobs_B_T, None
    with torch.no_grad():
        logp_all = torch.log_softmax(logits_B_T_V.detach(), -1)
        ent = -(logp_all.exp() * logp_all).sum(-1)
    return logprobs_B_T, torch.cat([ent.new_zeros(ent.shape[0], 1), ent], dim=1)
