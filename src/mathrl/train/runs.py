"""What every training run does around its loop: the run folder, its recorded config, the
metrics sink, the policy, checkpoints and exact resume, the final weights and the final eval.

Run folder::

    config.yaml              the settings (a rerun into the folder must match them)
    metrics.jsonl            the one metrics sink (train/*, eval/*, time/*), step on every line
    checkpoints/step_N/      weights (PEFT adapter or full model) + trainer_state.pt
    final/                   the trained weights alone: --adapter RUN/final (LoRA) or --model RUN/final
    eval/<benchmark>/        the final evaluation (samples.jsonl, metrics.json), as mathrl eval writes
    eval_steps/step_N/eval/  periodic evaluations during training
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from mathrl.config import config_dict, describe_changes
from mathrl.device import choose_device, choose_dtype
from mathrl.distributed import Dist, gathered, is_sharded, wrap_policy
from mathrl.errors import UserError
from mathrl.fileio import write_atomic
from mathrl.models import load_tokenizer
from mathrl.prompts import PromptProtocol
from mathrl.seeding import seed_everything
from mathrl.train.checkpoint import (
    checkpoint_dir,
    latest_checkpoint,
    list_checkpoints,
    load_optimizer_state,
    load_state,
    load_weights_into,
    optimizer_state,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from mathrl.train.policy import (
    LogprobForward,
    load_policy,
    set_activation_checkpointing,
    trainable_parameters,
)
from mathrl.train.sink import MetricsSink, NullSink

# Settings that may differ when a run is resumed: where it runs, where its rollouts are sampled
# (a restarted server on another port), and where metrics are mirrored.
RESUMABLE_CHANGES = ("device", "mirror", "rollout")


@dataclass(frozen=True)
class EvalSettings:
    """Evaluation through ``mathrl eval``'s code: at the end, and (RL) every ``every`` steps."""

    benchmarks: tuple[str, ...] = ()
    num_problems: int | None = None
    shuffle_seed: int | None = None  # the first num_problems of a hub-style shuffle (else a stable sample)
    max_tokens: int = 2048
    temperature: float = 0.01
    n: int = 1
    # The prompt protocol; unset: the run's own training prompt (GRPO), mathrl's default (SFT).
    prompt: PromptProtocol | None = None
    every: int = 0  # steps between periodic evals (0: only at the end)
    batch_size: int = 64


class TrainRun:
    """A run folder and the trainable policy described by ``cfg`` (an SFT or GRPO config).

    ``cfg`` needs ``model``, ``adapter``, ``finetune``, ``lora``, ``gradient_checkpointing``,
    ``device``, ``dtype``, ``seed``,
    ``mirror``, ``grad_clip``, ``keep_checkpoints``, ``data_dir``, ``eval``, ``epochs``,
    ``max_steps``, ``lr``, the Adam settings and ``weight_decay``.

    Under torchrun (``dist``, from :func:`mathrl.distributed.session`) every rank builds the
    same run; rank 0 alone writes the folder (config, metrics, checkpoints, ``final/``, evals),
    every rank resumes from it, and ``forward`` is the policy wrapped for several processes.
    """

    def __init__(self, out_dir: Path, cfg, log: Callable[[str], None] = print, dist: Dist | None = None):
        self.dist = dist or Dist(device=choose_device(cfg.device))
        self.out_dir, self.cfg = Path(out_dir), cfg
        self.log = log if self.dist.main else _quiet
        self._check_config()
        seed_everything(cfg.seed)
        self.device = self.dist.device
        self.dtype = choose_dtype(self.device, cfg.dtype)
        self.tokenizer = load_tokenizer(cfg.model)
        self.model = load_policy(cfg.model, cfg.finetune, cfg.lora, self.device, self.dtype, cfg.adapter)
        set_activation_checkpointing(self.model, cfg.gradient_checkpointing)
        # The trainers' one forward: log-probabilities of the policy, as DDP or FSDP wraps it.
        self.forward = wrap_policy(LogprobForward(self.model), cfg.finetune, self.dist)
        self.trainable = trainable_parameters(self.model)  # after wrapping: FSDP swaps in sharded ones
        n_train = sum(p.numel() for p in self.trainable)  # a shard's numel() is the whole tensor's
        n_all = sum(p.numel() for p in self.model.parameters())
        processes = (f", {self.dist.world_size} processes ({'FSDP' if is_sharded(self.forward) else 'DDP'})"
                     if self.dist.enabled else "")
        self.log(
            f"{cfg.model}{' + ' + cfg.adapter if cfg.adapter else ''}: {cfg.finetune}, "
            f"{n_train:,} of {n_all:,} parameters train ({self.device}, {self.dtype}{processes})"
        )
        self.sink = (MetricsSink(self.out_dir, cfg.mirror, config=config_dict(cfg)) if self.dist.main
                     else NullSink())

    def _check_config(self) -> None:
        path = self.out_dir / "config.yaml"
        wanted = config_dict(self.cfg)
        if path.is_file():
            existing = yaml.safe_load(path.read_text()) or {}
            changed = describe_changes(existing, wanted, ignore=RESUMABLE_CHANGES)
            if changed:
                raise UserError(
                    f"{self.out_dir} holds a run with other settings ({changed}); "
                    "rerun with the same config to resume, or use another --out"
                )
        if self.dist.main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            write_atomic(path, yaml.safe_dump(wanted, sort_keys=False))

    def total_steps(self, steps_per_epoch: int) -> int:
        """Optimizer steps of the run: ``epochs`` epochs, capped by ``max_steps``."""
        total = steps_per_epoch * self.cfg.epochs
        return total if self.cfg.max_steps is None else min(total, self.cfg.max_steps)

    def make_optimizer(self) -> torch.optim.Optimizer:
        cfg = self.cfg
        return torch.optim.AdamW(self.trainable, lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2),
                                 eps=cfg.adam_eps, weight_decay=cfg.weight_decay)

    def resume(self, optimizer: torch.optim.Optimizer) -> tuple[int, dict]:
        """Load the last checkpoint if there is one: (its step, its state); else (0, {}). Every
        rank loads rank 0's choice, and its own RNG state when the run had as many ranks."""
        checkpoint = self.dist.broadcast(latest_checkpoint(self.out_dir) if self.dist.main else None)
        if checkpoint is None:
            self.sink.drop_after(0)
            return 0, {}
        state = load_state(checkpoint)
        load_weights_into(self.model, checkpoint)
        load_optimizer_state(self.model, optimizer, state["optimizer"])
        per_rank = state.get("rng_ranks") or [state["rng"]]
        set_rng_state(per_rank[self.dist.rank] if len(per_rank) == self.dist.world_size else state["rng"])
        self.sink.drop_after(state["step"])
        self.log(f"resumed from {checkpoint} (step {state['step']})")
        return state["step"], state

    def clip_and_step(self, optimizer: torch.optim.Optimizer) -> float:
        """Clip the global grad norm (if configured), step, zero the grads; returns the norm."""
        clip = self.cfg.grad_clip if self.cfg.grad_clip > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.trainable, clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        # Under FSDP the norm is a DTensor over the shards' partial norms.
        return float(grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm)

    def full_weights(self) -> dict | None:
        """The model's whole state dict on rank 0 when FSDP shards it (a collective: every rank
        calls it); None when each process holds the whole module."""
        if not is_sharded(self.forward):
            return None
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        weights = get_model_state_dict(self.model,
                                       options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        # A tied weight (Qwen3-4B's head is its embeddings) is saved once, as one process saves it.
        seen, tied = set(), set()
        for name, param in self.model.named_parameters(remove_duplicate=False):
            if id(param) in seen:
                tied.add(name)
            seen.add(id(param))
        return {k: v for k, v in weights.items() if k not in tied}

    def save(self, step: int, optimizer: torch.optim.Optimizer, extra: dict | None = None) -> Path:
        """A checkpoint of ``step``: every rank calls it (FSDP gathers, each rank gives its RNG
        state), rank 0 writes it, and no rank goes on before it is in place."""
        weights = self.full_weights()
        state = {"optimizer": optimizer_state(self.model, optimizer),
                 "rng_ranks": self.dist.gather(rng_state()), **(extra or {})}
        path = checkpoint_dir(self.out_dir, step)
        if self.dist.main:
            path = save_checkpoint(self.out_dir, step, self.model, self.tokenizer, state,
                                   keep=self.cfg.keep_checkpoints, weights=weights)
            self.log(f"step {step}: checkpoint {path}")
        self.dist.barrier()
        return path

    def gathered(self):
        """Whole weights on this rank for the block (sampling, evaluation under FSDP)."""
        return gathered(self.forward) if self.dist.enabled else contextlib.nullcontext()

    def finish(
        self, step: int, optimizer: torch.optim.Optimizer, last: dict, extra: dict | None = None
    ) -> dict:
        """Final checkpoint, ``final/`` weights, final eval; returns the last step's metrics + evals."""
        checkpoint = checkpoint_dir(self.out_dir, step)
        # A rerun of a finished run has it.
        if not self.dist.broadcast(self.dist.main and checkpoint in list_checkpoints(self.out_dir)):
            checkpoint = self.save(step, optimizer, extra)
        final = self.out_dir / "final"
        if self.dist.main and not final.is_dir():
            _link_weights(checkpoint, final)
        self.log(
            f"final weights: {final} ({'--adapter' if hasattr(self.model, 'peft_config') else '--model'} "
            f"{final})"
        )
        results = dict(last)
        if self.cfg.eval.benchmarks:
            for name, m in self.evaluate(self.out_dir, step).items():
                results[f"eval/{name}/accuracy"] = m["accuracy"]
        if self.dist.main:
            summary = json.dumps({"step": step, **results}, indent=2) + "\n"
            write_atomic(self.out_dir / "summary.json", summary)
        self.sink.close()
        return results

    def evaluate(self, where: Path, step: int) -> dict[str, dict]:
        """Evaluate the current weights on the configured benchmarks into ``where/eval/``. Under
        torchrun rank 0 evaluates (with the whole weights) while the others wait ({} there)."""
        with self.gathered():
            results = self._evaluate(where, step) if self.dist.main else {}
        self.dist.barrier()
        return results

    def _evaluate(self, where: Path, step: int) -> dict[str, dict]:
        from mathrl.eval.run import EvalConfig, evaluate_benchmark
        from mathrl.sampling.hf import HFSampler

        settings = self.cfg.eval
        eval_cfg = EvalConfig(
            model=self.cfg.model,
            benchmarks=settings.benchmarks,
            n=settings.n,
            temperature=settings.temperature,
            max_tokens=settings.max_tokens,
            num_problems=settings.num_problems,
            shuffle_seed=settings.shuffle_seed,
            seed=self.cfg.seed,
            prompt=settings.prompt or getattr(self.cfg, "prompt", None) or PromptProtocol(),
        )
        sampler = HFSampler(self.model, self.tokenizer, batch_size=settings.batch_size)
        was_training = self.model.training
        self.model.eval()
        # Sampling must not move the training RNG streams (an exact resume depends on them).
        rng = torch.get_rng_state()
        try:
            results = {
                b: evaluate_benchmark(sampler, eval_cfg, b, Path(where), self.cfg.data_dir)
                for b in settings.benchmarks
            }
        finally:
            torch.set_rng_state(rng)
            self.model.train(was_training)
        values = {
            f"eval/{b}/{k}": v
            for b, m in results.items()
            for k, v in m.items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        }
        self.sink.log(values, step=step)
        for b, m in results.items():
            self.log(
                f"step {step}: {b} accuracy {100 * m['accuracy']:.1f} ± {100 * m['ci95_normal']:.1f}% "
                f"({m['problems']} problems, mean {m['mean_tokens']:.0f} tokens)"
            )
        return results


def _link_weights(checkpoint: Path, final: Path) -> None:
    """``final/`` = the checkpoint's weight files (hard links where possible), not its trainer state."""
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for f in checkpoint.iterdir():
        if f.name == "trainer_state.pt" or not f.is_file():
            continue
        try:
            os.link(f, tmp / f.name)
        except OSError:
            shutil.copy2(f, tmp / f.name)
    tmp.rename(final)


def _quiet(_message: str) -> None:
    """The log of ranks other than 0: one line per event, from rank 0 alone."""
