"""What every training run does around its loop: the run folder, its recorded config, the
metrics sink, the learner, checkpoints and exact resume, the final weights and the evaluations.

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
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

import yaml

from mathrl.config import config_dict, describe_changes, fill_defaults
from mathrl.device import choose_dtype
from mathrl.distributed import Dist, session
from mathrl.errors import UserError
from mathrl.fileio import write_atomic
from mathrl.grading import Grader
from mathrl.models import load_tokenizer
from mathrl.sampling import Sampler
from mathrl.seeding import seed_everything
from mathrl.train.checkpoint import checkpoint_dir, latest_checkpoint, list_checkpoints, prune_checkpoints
from mathrl.train.config import TrainConfig
from mathrl.train.learner import AdamParams, Learner
from mathrl.train.local import LocalLearner, Plan
from mathrl.train.sink import MetricsSink, NullSink
from mathrl.watchdog import beat, phase

# Settings that may differ when a run is resumed: where it runs, where its rollouts are sampled
# (a restarted server on another port), and where metrics are mirrored.
RESUMABLE_CHANGES = ("device", "mirror", "rollout")


class Stateful(Protocol):
    """Something a checkpoint carries besides the learner's state (the rewards' records)."""

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...

    def write(self, out_dir: Path) -> None: ...


def make_learner(cfg: TrainConfig, tokenizer, out_dir: Path, dist: Dist, plan: Plan,
                 reference: bool) -> Learner:
    """The learner a recipe asks for (the one place that knows which kinds there are)."""
    if cfg.learner == "tinker":
        from mathrl.tinker.learner import TinkerLearner

        return TinkerLearner(cfg, tokenizer, out_dir, dist)
    return LocalLearner(cfg.model, tokenizer, out_dir, finetune=cfg.finetune, lora=cfg.lora,
                        adapter=cfg.adapter, plan=plan, gradient_checkpointing=cfg.gradient_checkpointing,
                        dtype=choose_dtype(dist.device, cfg.dtype), adam=cfg.adam(0, 1), reference=reference,
                        dist=dist)


@contextlib.contextmanager
def open_run(out_dir: str | Path, cfg: TrainConfig, log: Callable[[str], None], plan: Plan,
             reference: bool = False,
             progress: Callable[[int, int, dict], None] | None = None) -> Iterator[TrainRun]:
    """A :class:`TrainRun` for the length of the block, inside this process's place in a
    torchrun job (:func:`mathrl.distributed.session`; one process outside torchrun)."""
    with session(cfg.device) as dist:
        yield TrainRun(Path(out_dir), cfg, log, dist, plan, reference, progress)


class TrainRun:
    """A run folder and the learner described by ``cfg`` (an SFT or GRPO config).

    Under torchrun every rank builds the same run; rank 0 alone writes the folder (config,
    metrics, checkpoints, ``final/``, evals) and logs, and every rank resumes from it."""

    def __init__(self, out_dir: Path, cfg: TrainConfig, log: Callable[[str], None], dist: Dist, plan: Plan,
                 reference: bool = False, progress: Callable[[int, int, dict], None] | None = None):
        self.dist, self.out_dir, self.cfg = dist, Path(out_dir), cfg
        self.log = log if dist.main else _quiet
        self.progress = progress if dist.main else None
        self._check_config()
        seed_everything(cfg.seed)
        if cfg.learner == "tinker":
            from mathrl.tinker.learner import preflight

            preflight(cfg.tinker.base_url)
        with phase("loading"):
            try:
                self.tokenizer = load_tokenizer(cfg.model)
            except (OSError, ValueError) as err:
                raise UserError(f"cannot load the tokenizer of {cfg.model!r}: {err}") from None
            self.learner = make_learner(cfg, self.tokenizer, self.out_dir, dist, plan, reference)
        describe = getattr(self.learner, "describe", lambda: "")()
        self.log(f"{cfg.model}{' + ' + cfg.adapter if cfg.adapter else ''}: {describe}")
        self.sink = (MetricsSink(self.out_dir, cfg.mirror, config=config_dict(cfg)) if dist.main
                     else NullSink())

    def _check_config(self) -> None:
        path = self.out_dir / "config.yaml"
        wanted = config_dict(self.cfg)
        if path.is_file():
            # Keys a later mathrl added are compared as their defaults: a run started before
            # them resumes.
            existing = fill_defaults(yaml.safe_load(path.read_text()) or {}, type(self.cfg))
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

    def adam(self, step: int, total_steps: int) -> AdamParams:
        return self.cfg.adam(step, total_steps)

    def grader(self, extract: str) -> Grader:
        """The run's grader: its settings, and under torchrun each rank grades a share."""
        g = self.cfg.grading
        return Grader(extract, timeout=g.timeout, processes=g.processes, dist=self.dist)

    def resume(self, states: dict[str, Stateful] | None = None) -> int:
        """Load the last checkpoint if there is one (every rank loads rank 0's choice); returns
        its step, else 0."""
        checkpoint = self.dist.broadcast(latest_checkpoint(self.out_dir) if self.dist.main else None)
        if checkpoint is None:
            self.sink.drop_after(0)
            return 0
        extra = self.learner.load_state(checkpoint)
        if "rewards" not in extra and "efficiency" in extra:  # checkpoints before rewards were a registry
            extra["rewards"] = {"efficiency": extra["efficiency"]}
        for name, state in (states or {}).items():
            if name in extra:
                state.load_state_dict(extra[name])
        self.sink.drop_after(extra["step"])
        self.log(f"resumed from {checkpoint} (step {extra['step']})")
        return extra["step"]

    def save(self, step: int, states: dict[str, Stateful] | None = None) -> Path:
        """A checkpoint of ``step`` (every rank calls it), the older ones pruned."""
        path = checkpoint_dir(self.out_dir, step)
        states = states or {}
        self.learner.save_state(path, {"step": step, **{k: s.state_dict() for k, s in states.items()}})
        if self.dist.main:
            prune_checkpoints(self.out_dir, self.cfg.keep_checkpoints)
            for state in states.values():
                state.write(self.out_dir)
            self.log(f"step {step}: checkpoint {path}")
        return path

    def end_step(self, step: int, total_steps: int, metrics: dict, states: dict[str, Stateful] | None = None,
                 sampler: Callable[[], Sampler] | None = None) -> None:
        """After optimizer step ``step``: its metrics, the progress bar, a checkpoint and a periodic
        evaluation when they are due (``sampler()`` gives the evaluation's sampler of the new weights)."""
        beat()
        self.sink.log(metrics, step=step)
        if self.progress:
            self.progress(step, total_steps, metrics)
        if self.cfg.save_every and step % self.cfg.save_every == 0 and step < total_steps:
            self.save(step, states)
        every = self.cfg.eval.every
        if every and step % every == 0 and step < total_steps and self.cfg.eval.benchmarks and sampler:
            self.evaluate(self.out_dir / "eval_steps" / f"step_{step:06d}", step, sampler())

    def finish(self, step: int, last: dict, states: dict[str, Stateful] | None = None,
               sampler: Callable[[], Sampler] | None = None) -> dict:
        """Final checkpoint, ``final/`` weights, final eval; returns the last step's metrics + evals."""
        checkpoint = checkpoint_dir(self.out_dir, step)
        # A rerun of a finished run has it.
        if not self.dist.broadcast(self.dist.main and checkpoint in list_checkpoints(self.out_dir)):
            checkpoint = self.save(step, states)
        elif self.dist.main:
            for state in (states or {}).values():
                state.write(self.out_dir)
        final = self.out_dir / "final"
        if self.dist.main and not final.is_dir():
            _link_weights(checkpoint, final)
        if (final / "adapter_config.json").is_file() or not self.dist.main:
            self.log(f"final weights: {final} (--adapter {final})")
        elif (final / "tinker.json").is_file():
            self.log(f"final weights: on the Tinker service, their tinker:// paths in {final}/tinker.json "
                     f"(--tinker --adapter {final})")
        else:
            self.log(f"final weights: {final} (--model {final})")
        results = dict(last)
        if self.cfg.eval.benchmarks and sampler:
            for name, m in self.evaluate(self.out_dir, step, sampler()).items():
                results[f"eval/{name}/accuracy"] = m["accuracy"]
        if self.dist.main:
            summary = json.dumps({"step": step, **results}, indent=2) + "\n"
            write_atomic(self.out_dir / "summary.json", summary)
        self.sink.close()
        return results

    def evaluate(self, where: Path, step: int, sampler: Sampler) -> dict[str, dict]:
        """Evaluate ``sampler`` (the current weights) on the configured benchmarks into
        ``where/eval/``. Under torchrun rank 0 evaluates (with the whole weights) while the
        others wait ({} there)."""
        with self.learner.gathered():
            results = self._evaluate(where, step, sampler) if self.dist.main else {}
        self.dist.barrier()
        return results

    def _evaluate(self, where: Path, step: int, sampler: Sampler) -> dict[str, dict]:
        from mathrl.eval.run import evaluate_benchmark

        eval_cfg = self.cfg.eval.config(self.cfg.model, self.cfg.seed, getattr(self.cfg, "prompt", None))
        grading = self.cfg.grading
        grader = Grader(timeout=grading.timeout, processes=grading.processes)
        results = {b: evaluate_benchmark(sampler, eval_cfg, b, Path(where), self.cfg.data_dir, grader=grader)
                   for b in self.cfg.eval.benchmarks}
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
