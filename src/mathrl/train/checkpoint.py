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

from mathrl.fileio import writing

STATE_FILE = "trainer_state.pt"
_STEP_DIR = re.compile(r"^step_(\d+)$")


def checkpoint_dir(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"step_{step:06d}"


def rng_state() -> dict:
    """This process's generators: Python, NumPy, torch's CPU one and its current GPU's."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def save_checkpoint(folder: str | Path, model, tokenizer, state: dict, weights: dict | None = None) -> Path:
    """Write weights and ``state`` (with this process's RNG state) to ``folder``, under a
    temporary name renamed into place. ``weights``: the model's state dict when the module itself
    does not hold it whole (gathered from FSDP shards)."""
    final = Path(folder)
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with writing(final):
            tmp.mkdir(parents=True)
            model.save_pretrained(tmp, state_dict=weights)
            if not hasattr(model, "peft_config"):  # a full model folder is loadable only with its tokenizer
                tokenizer.save_pretrained(tmp)
            torch.save({"rng": rng_state(), **state}, tmp / STATE_FILE)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # a full disk: give back what the partial copy took
        raise
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    return final


def prune_checkpoints(run_dir: str | Path, keep: int) -> None:
    """Keep only the newest ``keep`` finished checkpoints (0 = all)."""
    if keep > 0:
        for old in list_checkpoints(run_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)


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
    # Our own files: optimizer tensors, RNG states (numpy arrays, tuples), plain numbers. Memory-
    # mapped: a rank of a sharded run reads only its shard of the optimizer state.
    return torch.load(checkpoint / STATE_FILE, weights_only=False, mmap=True)


def optimizer_state(model, optimizer: torch.optim.Optimizer) -> dict:
    """The optimizer's whole state keyed by parameter name, as one process holds it: the same
    file whether one process, DDP or FSDP (gathered from the shards) wrote it, so a checkpoint
    resumes on any number of processes. A collective under FSDP: every rank calls it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(model, optimizer,
                                    options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_optimizer_state(model, optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Restore :func:`optimizer_state`'s dict (each FSDP rank keeps its shard), or the
    parameter-index dict older checkpoints hold."""
    if all(isinstance(p, int) for g in state["param_groups"] for p in g["params"]):
        optimizer.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))


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
        if _is_sharded(model):  # FSDP: each rank keeps its shard of the whole tensors
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

            wanted = set(model.state_dict())
            missing = [k for k in wanted if k not in weights]
            set_model_state_dict(model, {k: v for k, v in weights.items() if k in wanted},
                                 options=StateDictOptions(full_state_dict=True, strict=False))
        else:
            missing, _ = model.load_state_dict(weights, strict=False)
        # Tied weights (lm_head = embeddings) are saved once; anything else missing is an error.
        missing = [
            m for m in missing if m not in getattr(model, "_tied_weights_keys", {}) and "lm_head" not in m
        ]
        if missing:
            raise RuntimeError(f"{checkpoint}: missing weights {missing[:5]}")


def _is_sharded(model) -> bool:
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in model.parameters())
