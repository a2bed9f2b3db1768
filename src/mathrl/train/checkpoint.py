"""Checkpoints: weights in the standard format (a PEFT adapter folder that transformers, peft
and vLLM load, or a full model folder), plus the trainer's state for an exact resume.

``RUN/checkpoints/step_000120/`` holds ``adapter_model.safetensors`` + ``adapter_config.json``
(LoRA) or ``model.safetensors`` + ``config.json`` + tokenizer (full), and ``trainer_state.pt``
(step, optimizer, RNG states, anything the loop adds). A checkpoint is written under a temporary
name and renamed into place, so a kill never leaves a half-written one that looks finished.
"""

from __future__ import annotations

import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch

STATE_FILE = "trainer_state.pt"
_STEP_DIR = re.compile(r"^step_(\d+)$")


def checkpoint_dir(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"step_{step:06d}"


def rng_state() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def save_checkpoint(run_dir: str | Path, step: int, model, tokenizer, state: dict, keep: int = 0) -> Path:
    """Write weights and ``state`` for ``step``; keep only the newest ``keep`` (0 = all)."""
    final = checkpoint_dir(run_dir, step)
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp)
    if not hasattr(model, "peft_config"):  # a full model folder is loadable only with its tokenizer
        tokenizer.save_pretrained(tmp)
    torch.save({"step": step, "rng": rng_state(), **state}, tmp / STATE_FILE)
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    if keep > 0:
        for old in list_checkpoints(run_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Finished checkpoints, oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [
        (int(m.group(1)), p)
        for p in root.iterdir()
        if (m := _STEP_DIR.match(p.name)) and (p / STATE_FILE).is_file()
    ]
    return [p for _, p in sorted(found)]


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def load_state(checkpoint: Path) -> dict:
    # Our own files: optimizer tensors, RNG states (numpy arrays, tuples), plain numbers.
    return torch.load(checkpoint / STATE_FILE, weights_only=False)


def load_weights_into(model, checkpoint: Path) -> None:
    """Copy a checkpoint's trained weights into ``model`` (same shape: adapter or full)."""
    if hasattr(model, "peft_config"):
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        set_peft_model_state_dict(model, load_file(checkpoint / "adapter_model.safetensors"))
    else:
        from safetensors.torch import load_file

        files = sorted(checkpoint.glob("model*.safetensors"))
        weights = {}
        for f in files:
            weights.update(load_file(f))
        missing, _ = model.load_state_dict(weights, strict=False)
        # Tied weights (lm_head = embeddings) are saved once; anything else missing is an error.
        missing = [
            m for m in missing if m not in getattr(model, "_tied_weights_keys", {}) and "lm_head" not in m
        ]
        if missing:
            raise RuntimeError(f"{checkpoint}: missing weights {missing[:5]}")
