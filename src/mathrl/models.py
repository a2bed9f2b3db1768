"""Loading models and tokenizers. ``tiny``, a local folder and a hub id go through the same code."""

from __future__ import annotations

import functools
import socket
from pathlib import Path
from urllib.parse import urlparse

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel
from transformers.tokenization_utils_base import PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

# Loading a model prints a per-tensor progress bar; our commands draw their own.
hf_logging.disable_progress_bar()

TINY = "tiny"
TINY_PATH = Path(__file__).parent / "toy" / "tiny"
# The same architecture and tokenizer trained longer (mathrl.toy.pretrain.TEACHER_CONFIG): the
# strong teacher that distillation tests and the demo serve over HTTP.
TEACHER = "tiny-teacher"
TEACHER_PATH = Path(__file__).parent / "toy" / "teacher"
EMBEDDED = {TINY: TINY_PATH, TEACHER: TEACHER_PATH}


def resolve_model(name_or_path: str | Path) -> str:
    """``tiny`` / ``tiny-teacher`` -> the folders shipped in the package; anything else is left to
    transformers.

    A path that exists is a local model folder; otherwise the string is a hub id, which
    transformers fetches (or reads from its cache when offline).
    """
    if str(name_or_path) in EMBEDDED:
        path = EMBEDDED[str(name_or_path)]
        if not (path / "config.json").is_file():
            teacher = " --teacher" if path == TEACHER_PATH else ""
            raise FileNotFoundError(f"the embedded model is missing from {path}; rebuild it with "
                                    f"`mathrl toy pretrain --out {path}{teacher}`")
        return str(path)
    name = str(name_or_path)
    if name.startswith(("/", "./", "../", "~")) and not Path(name).expanduser().exists():
        raise FileNotFoundError(f"no model folder at {name}")
    return str(Path(name).expanduser()) if name.startswith("~") else name


@functools.cache
def hub_unreachable() -> str | None:
    """Why the Hugging Face hub cannot be reached from here (one TCP connection, 5 s at most,
    once per process), or None when it can. Without it, transformers retries every request for
    about a minute before it says so."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    url = urlparse(constants.ENDPOINT)
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=5).close()
    except OSError as err:
        return f"{host}:{port}: {err.strerror or err}"
    return None


def hub_kwargs(resolved: str) -> dict:
    """``from_pretrained`` options for ``resolved`` (what :func:`resolve_model` gives): for a hub
    id while the hub cannot be reached, the local cache only (a cached model loads at once); one
    that is not cached fails at once, with one line."""
    if Path(resolved).exists() or (why := hub_unreachable()) is None:
        return {}
    from huggingface_hub import try_to_load_from_cache

    if not isinstance(try_to_load_from_cache(resolved, "config.json"), str):
        raise FileNotFoundError(f"{resolved} is not in the local Hugging Face cache and the hub cannot be "
                                f"reached ({why}): download it where there is a network (`hf download "
                                f"{resolved}`) or pass a local model folder")
    return {"local_files_only": True}


def load_tokenizer(name_or_path: str | Path) -> PreTrainedTokenizerBase:
    """The model's tokenizer, left-padded (decoder-only generation pads on the left)."""
    resolved = resolve_model(name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(resolved, **hub_kwargs(resolved))
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def local_tokenizer(name_or_path: str | Path) -> PreTrainedTokenizerBase | None:
    """The model's tokenizer if it is on this machine (embedded, a folder, the hub cache), else
    None; never reaches for the network."""
    try:
        return AutoTokenizer.from_pretrained(resolve_model(name_or_path), local_files_only=True)
    except (OSError, ValueError):
        return None


def load_model(name_or_path: str | Path, device: torch.device, dtype: torch.dtype,
               adapter: str | Path | None = None) -> PreTrainedModel:
    """A causal LM in eval mode on ``device``; with ``adapter``, a PEFT (LoRA) adapter on top."""
    resolved = resolve_model(name_or_path)
    model = AutoModelForCausalLM.from_pretrained(resolved, dtype=dtype, **hub_kwargs(resolved))
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter))
    return model.to(device).eval()
