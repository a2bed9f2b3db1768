"""Building a sampler from command-line style settings: in-process model or an HTTP server."""

from __future__ import annotations

from mathrl.errors import UserError
from mathrl.sampling import Sampler


def make_sampler(model: str, adapter: str | None = None, base_url: str | None = None,
                 device: str = "auto", dtype: str = "auto", batch_size: int = 64,
                 api_key: str | None = None, concurrency: int = 16, tinker: str | None = None) -> Sampler:
    """``base_url`` set: an OpenAI-compatible server serving ``model``; ``tinker`` set (a URL, or
    "" for the default): the Tinker service's ``model`` (``adapter``: its saved weights); else
    ``model`` in process."""
    if tinker is not None:
        if base_url:
            raise UserError("--base-url and --tinker: give one (--tinker URL for a Tinker service)")
        from mathrl.models import load_tokenizer
        from mathrl.tinker.learner import remote_sampler

        return remote_sampler(tinker or None, model, adapter, load_tokenizer(model))
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
