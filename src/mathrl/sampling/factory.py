"""Building a sampler from command-line style settings: in-process model or an HTTP server."""

from __future__ import annotations

from mathrl.errors import UserError
from mathrl.sampling import Sampler


def make_sampler(model: str, adapter: str | None = None, base_url: str | None = None,
                 device: str = "auto", dtype: str = "auto", batch_size: int = 64,
                 api_key: str | None = None, concurrency: int = 16) -> Sampler:
    """``base_url`` set: an OpenAI-compatible server serving ``model``; else ``model`` in process."""
    if base_url:
        from mathrl.sampling.openai import OpenAISampler

        return OpenAISampler(base_url, model, api_key=api_key, concurrency=concurrency)
    from mathrl.device import choose_device, choose_dtype
    from mathrl.models import load_model, load_tokenizer
    from mathrl.sampling.hf import HFSampler

    try:
        torch_device = choose_device(device)
        tokenizer = load_tokenizer(model)
        loaded = load_model(model, torch_device, choose_dtype(torch_device, dtype), adapter)
    except (OSError, ValueError) as err:
        raise UserError(f"cannot load model {model!r}: {err}") from None
    return HFSampler(loaded, tokenizer, batch_size=batch_size)
