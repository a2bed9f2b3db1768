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
from mathrl.errors import UserError
from mathrl.fileio import write_atomic
from mathrl.models import load_tokenizer
from mathrl.prompts import PromptProtocol
from mathrl.seeding import seed_everything
from mathrl.train.checkpoint import (
    checkpoint_dir,
    latest_checkpoint,
    list_checkpoints,
    load_state,
    load_weights_into,
    save_checkpoint,
    set_rng_state,
)
from mathrl.train.policy import load_policy, set_activation_checkpointing, trainable_parameters
from mathrl.train.sink import MetricsSink

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
    """

    def __init__(self, out_dir: Path, cfg, log: Callable[[str], None] = print):
        self.out_dir, self.cfg, self.log = Path(out_dir), cfg, log
        self._check_config()
        seed_everything(cfg.seed)
        self.device = choose_device(cfg.device)
        self.dtype = choose_dtype(self.device, cfg.dtype)
        self.tokenizer = load_tokenizer(cfg.model)
        self.model = load_policy(cfg.model, cfg.finetune, cfg.lora, self.device, self.dtype, cfg.adapter)
        set_activation_checkpointing(self.model, cfg.gradient_checkpointing)
        self.trainable = trainable_parameters(self.model)
        n_train = sum(p.numel() for p in self.trainable)
        n_all = sum(p.numel() for p in self.model.parameters())
        log(
            f"{cfg.model}{' + ' + cfg.adapter if cfg.adapter else ''}: {cfg.finetune}, "
            f"{n_train:,} of {n_all:,} parameters train ({self.device}, {self.dtype})"
        )
        self.sink = MetricsSink(self.out_dir, cfg.mirror, config=config_dict(cfg))

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
        """Load the last checkpoint if there is one: (its step, its state); else (0, {})."""
        checkpoint = latest_checkpoint(self.out_dir)
        if checkpoint is None:
            self.sink.drop_after(0)
            return 0, {}
        state = load_state(checkpoint)
        load_weights_into(self.model, checkpoint)
        optimizer.load_state_dict(state["optimizer"])
        set_rng_state(state["rng"])
        self.sink.drop_after(state["step"])
        self.log(f"resumed from {checkpoint} (step {state['step']})")
        return state["step"], state

    def clip_and_step(self, optimizer: torch.optim.Optimizer) -> float:
        """Clip the global grad norm (if configured), step, zero the grads; returns the norm."""
        clip = self.cfg.grad_clip if self.cfg.grad_clip > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.trainable, clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(grad_norm)

    def save(self, step: int, optimizer: torch.optim.Optimizer, extra: dict | None = None) -> Path:
        path = save_checkpoint(
            self.out_dir,
            step,
            self.model,
            self.tokenizer,
            {"optimizer": optimizer.state_dict(), **(extra or {})},
            keep=self.cfg.keep_checkpoints,
        )
        self.log(f"step {step}: checkpoint {path}")
        return path

    def finish(
        self, step: int, optimizer: torch.optim.Optimizer, last: dict, extra: dict | None = None
    ) -> dict:
        """Final checkpoint, ``final/`` weights, final eval; returns the last step's metrics + evals."""
        checkpoint = checkpoint_dir(self.out_dir, step)
        if checkpoint not in list_checkpoints(self.out_dir):  # a rerun of a finished run has it
            checkpoint = self.save(step, optimizer, extra)
        final = self.out_dir / "final"
        if not final.is_dir():
            _link_weights(checkpoint, final)
        self.log(
            f"final weights: {final} ({'--adapter' if hasattr(self.model, 'peft_config') else '--model'} "
            f"{final})"
        )
        results = dict(last)
        if self.cfg.eval.benchmarks:
            for name, m in self.evaluate(self.out_dir, step).items():
                results[f"eval/{name}/accuracy"] = m["accuracy"]
        write_atomic(self.out_dir / "summary.json", json.dumps({"step": step, **results}, indent=2) + "\n")
        self.sink.close()
        return results

    def evaluate(self, where: Path, step: int) -> dict[str, dict]:
        """Evaluate the current weights on the configured benchmarks into ``where/eval/``."""
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
