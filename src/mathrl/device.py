"""The one place that chooses a device and a dtype; everything else takes ``device``."""

from __future__ import annotations

import torch


def choose_device(preference: str = "auto") -> torch.device:
    """``auto`` picks CUDA, then Apple MPS, then CPU; any explicit torch device string is kept.

    >>> choose_device("cpu")
    device(type='cpu')
    """
    if preference != "auto":
        return torch.device(preference)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
           "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}


def choose_dtype(device: torch.device, preference: str = "auto") -> torch.dtype:
    """bf16 on GPUs that support it, fp16 on older CUDA GPUs, fp32 elsewhere.

    CPUs get fp32 because bf16 matmuls there are slower than fp32 on most cores and the tiny
    model is too small for memory to matter.
    """
    if preference != "auto":
        try:
            return _DTYPES[preference]
        except KeyError:
            raise ValueError(f"unknown dtype {preference!r}; choose one of {sorted(_DTYPES)}") from None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32
