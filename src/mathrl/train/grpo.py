"""``mathrl grpo``: reinforcement learning with verifiable rewards (GRPO as the studies ran it).

One step: take ``groups_per_batch`` training problems (a seeded permutation per epoch), sample
``group_size`` completions of each with the current weights through the sampler, grade them with
the one grader and combine the rewards, compute group advantages and drop groups with no reward
variance, then one optimizer step on the chosen loss over the completion tokens. The RL math
itself (and its deviations from the paper) is in :mod:`mathrl.train.rl`.

Resuming is exact: problem order is a function of (seed, epoch), the sampling seed a function of
(seed, step), and checkpoints hold weights, optimizer, RNG states and the efficiency record.

Under torchrun each rank samples, grades and trains on its share of the step's groups (whole
groups, so advantages need no communication); token weights come from counts summed over the
ranks, so the update is the one-process update of the global batch (:mod:`mathrl.distributed`).
"""

from __future__ import annotations

import contextlib
import copy
import math
import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import torch

from mathrl.data import load_dataset
from mathrl.distributed import SINGLE, Dist, accumulation, idle_backward, session
from mathrl.errors import UserError
from mathrl.prompts import PromptProtocol
from mathrl.sampling import SamplingParams, encode_prompt
from mathrl.sampling.chunked import chunk_seed
from mathrl.train.batching import plan_micro_batches
from mathrl.train.policy import DEFAULT_CHUNK_TOKENS, LoraSettings, token_logprobs
from mathrl.train.rewards import REWARD_NAMES, EfficiencyState, grade_group
from mathrl.train.rl import (
    LossName,
    Normalization,
    TisLevel,
    group_advantages,
    group_outcome,
    is_constant,
    k3_kl,
    make_loss,
    token_weight,
)
from mathrl.train.rollouts import RolloutSettings, publish, rollout_engine
from mathrl.train.runs import EvalSettings, TrainRun
from mathrl.train.schedule import Schedule, lr_multiplier
from mathrl.types import Group, Problem

EFFICIENCY_FILE = "efficiency_state.json"


@dataclass(frozen=True)
class GRPOConfig:
    model: str
    dataset: (
        str  # training problems: a registered name (math_train, math_hard, gsm8k_train, arith_train), a file
    )
    adapter: str | None = None  # start from this LoRA adapter (an SFT or RL run's final/)
    finetune: str = "lora"
    lora: LoraSettings = field(default_factory=LoraSettings)
    levels: tuple[int, ...] | None = None  # e.g. [4, 5]: hard problems only
    num_problems: int | None = None  # seeded subsample of the training set
    shuffle_seed: int | None = None  # or the first num_problems of a hub-style shuffle with this seed
    # A last batch smaller than groups_per_batch: "drop" it (every step the same shape), or
    # "keep" it (the Tinker cookbook's datasets do). Fewer problems than groups_per_batch are one
    # batch of all of them either way.
    last_batch: Literal["keep", "drop"] = "drop"
    group_size: int = 16  # K samples per problem
    groups_per_batch: int = 8  # problems per optimizer step
    max_tokens: int = 2048
    temperature: float = 1.0
    epochs: int = 1
    max_steps: int | None = None
    lr: float = 4e-5
    schedule: Schedule = "constant"
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0
    loss: LossName = "importance_sampling"
    clip_low: float = 0.2
    clip_high: float = 0.28
    kl_coef: float = 0.0
    # Truncated importance sampling against sampler/trainer mismatch (rl.py, note 5): cap on
    # pi_trainer / pi_sampler, per token or per sequence; None: off.
    tis_cap: float | None = None
    tis_level: TisLevel = "token"
    normalization: Normalization = "token_sum"
    scale_advantages: bool = False  # divide by the group's std (GRPO paper); off as in Dr. GRPO
    rewards: dict[str, float] = field(default_factory=lambda: {"correct": 1.0})
    micro_batch_size: int = 16  # sequences per forward/backward
    micro_batch_tokens: int | None = None  # and at most this many padded tokens per forward/backward
    gradient_checkpointing: bool = False  # recompute layer activations in the backward pass
    logprob_chunk_tokens: int = DEFAULT_CHUNK_TOKENS  # LM-head rows at a time (bounds the logits' memory)
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    adam_eps: float = 1e-8
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    sampler_batch_size: int = 256  # sequences decoded together (in process)
    rollout: RolloutSettings = field(default_factory=RolloutSettings)  # where to sample
    prompt: PromptProtocol = field(default_factory=PromptProtocol)  # eval uses it too, unless eval.prompt
    save_every: int = 0
    keep_checkpoints: int = 2
    seed: int = 0
    device: str = "auto"
    dtype: str = "auto"
    mirror: str = "none"
    data_dir: str | None = None
    eval: EvalSettings = field(default_factory=EvalSettings)

    def __post_init__(self):
        unknown = set(self.rewards) - set(REWARD_NAMES)
        if unknown:
            raise ValueError(f"rewards: unknown {sorted(unknown)}; known: {', '.join(REWARD_NAMES)}")
        if self.group_size < 2:
            raise ValueError("group_size must be >= 2 (advantages are relative to the group)")
        if self.finetune not in ("lora", "full"):
            raise ValueError(f"finetune must be 'lora' or 'full', got {self.finetune!r}")
        if self.tis_cap is not None and self.tis_cap <= 0:
            raise ValueError(f"tis_cap must be > 0, got {self.tis_cap}")
        if self.tis_level not in ("token", "sequence"):
            raise ValueError(f"tis_level must be 'token' or 'sequence', got {self.tis_level!r}")
        if self.rollout.engine == "vllm" and self.finetune != "lora":
            raise ValueError("rollout.engine 'vllm' loads a LoRA adapter each step; vLLM has no stable "
                             "endpoint that reloads full weights: full fine-tuning rolls out in process or "
                             "through mathrl serve (rollout.engine: serve)")


def steps_per_epoch(n_problems: int, groups_per_batch: int, last_batch: str = "drop") -> int:
    """Optimizer steps in one pass over ``n_problems`` (at least one: a set smaller than a batch
    is one batch).

    >>> steps_per_epoch(10, 3), steps_per_epoch(10, 3, "keep"), steps_per_epoch(10, 32)
    (3, 4, 1)
    """
    whole, rest = divmod(n_problems, groups_per_batch)
    return max(1, whole + (1 if rest and last_batch == "keep" else 0))


def step_problems(problems: Sequence[Problem], groups_per_batch: int, seed: int, step: int,
                  last_batch: str = "drop") -> list[Problem]:
    """The problems of optimizer step ``step``: epoch-wise seeded permutations cut in batches
    (a last partial batch dropped or kept per ``last_batch``)."""
    epoch, index = divmod(step, steps_per_epoch(len(problems), groups_per_batch, last_batch))
    order = list(range(len(problems)))
    random.Random(f"grpo/{seed}/{epoch}").shuffle(order)
    return [problems[i] for i in order[index * groups_per_batch : (index + 1) * groups_per_batch]]


def build_groups(
    problems: Sequence[Problem], completions, extract: str, cfg: GRPOConfig, efficiency: EfficiencyState
) -> list[Group]:
    groups = []
    for problem, group in zip(problems, completions, strict=True):
        graded = grade_group(problem, group, extract, cfg.rewards, efficiency)
        advantages = group_advantages([g.reward for g in graded], cfg.scale_advantages)
        groups.append(Group(problem, tuple(group), graded, tuple(advantages)))
    return groups


@dataclass(frozen=True)
class Rollout:
    """One completion ready for the update: prompt + completion ids, sampler logprobs, advantage."""

    input_ids: tuple[int, ...]
    prompt_len: int
    sampler_logprobs: tuple[float, ...]
    advantage: float


def rollout_sequences(groups: Sequence[Group], prompt_ids: dict[str, list[int]]) -> list[Rollout]:
    out = []
    for g in groups:
        prompt = prompt_ids[g.problem.id]
        for c, a in zip(g.completions, g.advantages, strict=True):
            if c.n_tokens == 0:
                continue
            out.append(Rollout(tuple(prompt) + c.token_ids, len(prompt), c.logprobs, a))
    return out


def collate_rollouts(seqs: Sequence[Rollout], pad_id: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Right-padded (B, T) tensors; ``loss_B_T`` marks completion tokens, where sampler logprobs sit."""
    width = max(len(s.input_ids) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(seqs), width), dtype=torch.long)
    loss = torch.zeros((len(seqs), width), dtype=torch.bool)
    old = torch.zeros((len(seqs), width))
    for b, s in enumerate(seqs):
        n = len(s.input_ids)
        ids[b, :n] = torch.tensor(s.input_ids)
        attention[b, :n] = 1
        loss[b, s.prompt_len : n] = True
        old[b, s.prompt_len : n] = torch.tensor(s.sampler_logprobs)
    return {
        "input_ids_B_T": ids.to(device),
        "attention_B_T": attention.to(device),
        "loss_B_T": loss.to(device),
        "sampler_logp_B_T": old.to(device),
        "advantage_B": torch.tensor([s.advantage for s in seqs], device=device),
    }


def train_grpo(
    cfg: GRPOConfig,
    out_dir: str | Path,
    log: Callable[[str], None] = print,
    progress: Callable[[int, int, dict], None] | None = None,
) -> dict:
    """Train per ``cfg`` into ``out_dir``, resuming from its last checkpoint. Returns final metrics
    (on every rank under torchrun; evals only on rank 0)."""
    with session(cfg.device) as dist:
        return _train(cfg, Path(out_dir), log, progress, dist)


def _train(cfg: GRPOConfig, out_dir: Path, log, progress, dist: Dist) -> dict:
    if dist.enabled and cfg.finetune == "full" and cfg.kl_coef > 0:
        raise UserError("kl_coef > 0 with full fine-tuning keeps a frozen copy of the model, which "
                        "several processes do not shard yet: run it in one process, or with LoRA")
    run = TrainRun(out_dir, cfg, log, dist)
    log = run.log
    dataset = load_dataset(
        cfg.dataset, cfg.data_dir, levels=cfg.levels, num_problems=cfg.num_problems, seed=cfg.seed,
        shuffle_seed=cfg.shuffle_seed,
    )
    problems = list(dataset.problems)
    if not problems:
        raise UserError(f"{cfg.dataset}: no problems selected")
    per_epoch = steps_per_epoch(len(problems), cfg.groups_per_batch, cfg.last_batch)
    total_steps = run.total_steps(per_epoch)
    log(
        f"{dataset.name}: {len(problems)} problems ({dataset.origin}); "
        f"{min(len(problems), cfg.groups_per_batch)} x {cfg.group_size} samples per step, "
        f"{per_epoch} steps per epoch, {total_steps} steps"
    )
    optimizer = run.make_optimizer()
    step, state = run.resume(optimizer)
    efficiency = EfficiencyState(dict(state.get("efficiency", {})))
    loss_fn = make_loss(cfg.loss, cfg.clip_low, cfg.clip_high, cfg.kl_coef, cfg.tis_cap, cfg.tis_level)
    reference = (reference_policy(run.model, cfg.finetune == "lora" and cfg.adapter is None)
                 if cfg.kl_coef > 0 else None)
    engine_ctx = rollout_engine(cfg.rollout, run.model, run.tokenizer, cfg.model, cfg.sampler_batch_size,
                                cfg.lora.rank, log, dist)
    with engine_ctx as engine:  # a server it started stops with the block, before the final eval
        params = SamplingParams(
            temperature=cfg.temperature, max_tokens=cfg.max_tokens, enable_thinking=cfg.prompt.thinking
        )
        last: dict = {}
        while step < total_steps:
            t0 = time.perf_counter()
            if engine.version != step:  # publish -> load: the engine samples the weights of this step
                engine.load(publish(run.model, run.out_dir, step, engine.needs_weights, run.full_weights,
                                    dist))
                if engine.needs_weights:
                    dist.barrier()  # a pool shared by the ranks is loaded (by rank 0) before any samples
            t_published = time.perf_counter()
            batch = step_problems(problems, cfg.groups_per_batch, cfg.seed, step, cfg.last_batch)
            batch = [batch[i] for i in dist.share(len(batch))]  # this rank's whole groups
            prompts = {p.id: encode_prompt(run.tokenizer, cfg.prompt.messages(p, dataset.name),
                                           cfg.prompt.thinking) for p in batch}
            # A prompt's samples depend on this seed and the prompt alone, not on the rank.
            step_params = replace(params, seed=chunk_seed(cfg.seed, "grpo", step))
            # Sampling in process runs a sharded (FSDP) model apart from the other ranks: whole weights.
            with run.gathered() if not engine.needs_weights else contextlib.nullcontext():
                completions = engine.sample([prompts[p.id] for p in batch], cfg.group_size, step_params)
            sampled_by = engine.version
            if engine.needs_weights:
                dist.barrier()  # a shared engine sleeps once every rank has its samples
            engine.sleep()  # the engine's memory is the trainer's until the next publish
            t1 = time.perf_counter()
            groups = build_groups(batch, completions, dataset.extract, cfg, efficiency)
            if dist.enabled:  # the shortest correct lengths each rank saw, for every rank's record
                seen = {p.id: efficiency.best[p.id] for p in batch if p.id in efficiency.best}
                for best in dist.gather(seen):
                    efficiency.best.update(best)
            kept = [g for g in groups if not is_constant(g.rewards)]
            t2 = time.perf_counter()
            lr = cfg.lr * lr_multiplier(step, total_steps, cfg.schedule, cfg.warmup_steps, cfg.min_lr_ratio)
            for group in optimizer.param_groups:
                group["lr"] = lr
            n_kept = int(dist.sum([len(kept)])[0])  # a rank with none still joins the others' update
            update = _update(run, optimizer, kept, prompts, loss_fn, reference, cfg) if n_kept else {}
            step += 1
            t3 = time.perf_counter()
            last = _step_metrics(_gather_groups(groups, dist), n_kept, update, lr, (t0, t1, t2, t3))
            last["time/publish_s"] = t_published - t0
            last["time/sampling_s"] = t1 - t_published
            last["rollout/policy_version"] = sampled_by
            last["rollout/staleness"] = (step - 1) - sampled_by  # optimizer steps behind the trained weights
            run.sink.log(last, step=step)
            if progress and dist.main:
                progress(step, total_steps, last)
            extra = {"efficiency": dict(efficiency.best)}
            if cfg.save_every and step % cfg.save_every == 0 and step < total_steps:
                run.save(step, optimizer, extra)
                if dist.main:
                    efficiency.save(run.out_dir / EFFICIENCY_FILE)
            if cfg.eval.every and step % cfg.eval.every == 0 and step < total_steps and cfg.eval.benchmarks:
                run.evaluate(run.out_dir / "eval_steps" / f"step_{step:06d}", step)
        engine.wake()  # leave a user's server as it was found
    if "efficiency" in cfg.rewards and dist.main:
        efficiency.save(run.out_dir / EFFICIENCY_FILE)
    return run.finish(total_steps, optimizer, last, {"efficiency": dict(efficiency.best)})


def reference_policy(model, new_adapter: bool) -> Callable[[], contextlib.AbstractContextManager]:
    """The frozen initial policy for the KL term: a context manager factory yielding the module
    that computes it.

    A new LoRA adapter starts at zero, so the initial policy is the same module with the adapter
    switched off: no copy. Otherwise (full fine-tuning, or a run that starts from a saved adapter)
    a frozen copy of the initial weights is made once (it doubles the weights' memory).
    """
    if new_adapter:
        @contextlib.contextmanager
        def adapter_off():
            with model.disable_adapter():
                yield model

        return adapter_off
    frozen = copy.deepcopy(model).eval().requires_grad_(False)
    return lambda: contextlib.nullcontext(frozen)


def _update(
    run: TrainRun,
    optimizer,
    groups: Sequence[Group],
    prompts: dict[str, list[int]],
    loss_fn,
    reference,
    cfg: GRPOConfig,
) -> dict:
    """One optimizer step on the completions of ``groups``; returns loss diagnostics."""
    seqs = rollout_sequences(groups, prompts)
    pad_id = run.tokenizer.pad_token_id
    out = accumulate_gradients(run.forward, seqs, pad_id, run.device, loss_fn, reference, cfg, run.dist)
    out["train/grad_norm"] = run.clip_and_step(optimizer)
    return out


def accumulate_gradients(forward, seqs: Sequence[Rollout], pad_id: int, device: torch.device, loss_fn,
                         reference, cfg: GRPOConfig, dist: Dist = SINGLE) -> dict:
    """Forward and backward over ``seqs`` in micro-batches (``micro_batch_size`` sequences and
    ``micro_batch_tokens`` padded tokens at most), leaving the batch's gradient in ``.grad``.
    Every token's weight is fixed for the whole batch, so any micro-batch plan gives the same
    gradient. ``forward`` is a :class:`~mathrl.train.policy.LogprobForward` (as ``dist`` wraps
    it); under torchrun ``seqs`` is this rank's share and the weights count every rank's tokens,
    so the reduced gradient is the global batch's. Returns the loss diagnostics (global)."""
    lengths = [len(s.input_ids) - s.prompt_len for s in seqs]
    n_seqs, total_tokens = (int(x) for x in dist.sum([len(seqs), sum(lengths)]))
    sums = {"loss": 0.0, "kl_sampler": 0.0, "kl_sampler_k3": 0.0, "entropy": 0.0, "clipped": 0.0,
            "kl_ref": 0.0, "truncated": 0.0}
    plan = plan_micro_batches([len(s.input_ids) for s in seqs], cfg.micro_batch_size, cfg.micro_batch_tokens)
    for idx in accumulation(forward, plan, dist):
        if idx is None:
            idle_backward(forward, device)
            continue
        batch = collate_rollouts([seqs[i] for i in idx], pad_id, device)
        mask_B_T = batch["loss_B_T"]
        weights_B = torch.tensor(
            [token_weight(lengths[i], n_seqs, total_tokens, cfg.max_tokens, cfg.normalization)
             for i in idx],
            device=device,
        )
        logp_B_T, entropy_B_T = forward(
            batch["input_ids_B_T"], batch["attention_B_T"], cfg.temperature,
            target_B_T=mask_B_T, chunk_tokens=cfg.logprob_chunk_tokens,
        )
        ref_logp_B_T = None
        if reference is not None:
            with torch.no_grad(), reference() as ref_model:
                ref_logp_B_T = token_logprobs(
                    ref_model, batch["input_ids_B_T"], batch["attention_B_T"], cfg.temperature,
                    target_B_T=mask_B_T, chunk_tokens=cfg.logprob_chunk_tokens,
                )
        terms = loss_fn(logp_B_T, batch["sampler_logp_B_T"], batch["advantage_B"], ref_logp_B_T, mask_B_T)
        loss = (terms.loss_B_T * mask_B_T * weights_B[:, None]).sum()
        (loss * dist.world_size).backward()  # the gradient reduction averages; this makes it a sum
        with torch.no_grad():
            diff_B_T = (batch["sampler_logp_B_T"] - logp_B_T.detach()) * mask_B_T
            sums["loss"] += loss.item()
            sums["kl_sampler"] += diff_B_T.sum().item()  # k1 estimate of KL(sampler || trainer)
            # k3 (unbiased, never negative) of the same KL: the mismatch to watch with an engine.
            k3_B_T = k3_kl(batch["sampler_logp_B_T"], logp_B_T.detach())
            sums["kl_sampler_k3"] += (k3_B_T * mask_B_T).sum().item()
            if terms.truncated_B_T is not None:
                sums["truncated"] += (terms.truncated_B_T & mask_B_T).sum().item()
            sums["entropy"] += (entropy_B_T * mask_B_T).sum().item()
            sums["clipped"] += (terms.clipped_B_T & mask_B_T).sum().item()
            if terms.kl_B_T is not None:
                sums["kl_ref"] += (terms.kl_B_T * mask_B_T).sum().item()
    *totals, n_micro = dist.sum([*sums.values(), len(plan)])
    sums = dict(zip(sums, totals, strict=True))
    out = {
        "train/loss": sums["loss"],
        "train/entropy": sums["entropy"] / total_tokens,
        "train/kl_sampler_trainer": sums["kl_sampler"] / total_tokens,
        "train/kl_sampler_trainer_k3": sums["kl_sampler_k3"] / total_tokens,
        "train/clip_fraction": sums["clipped"] / total_tokens,
        "train/sequences": n_seqs,
        "train/tokens": total_tokens,
        "train/micro_batches": int(n_micro),
    }
    if reference is not None:
        out["train/kl_reference"] = sums["kl_ref"] / total_tokens
    if cfg.tis_cap is not None:
        out["train/tis_truncated"] = sums["truncated"] / total_tokens  # share of tokens capped
    return out


def _gather_groups(groups: list[Group], dist: Dist) -> list[Group]:
    """Every rank's groups, in rank order (the global batch's order), for the step's metrics;
    without token ids and logprobs, which the metrics do not read."""
    if not dist.enabled:
        return groups
    slim = [replace(g, completions=tuple(replace(c, token_ids=(), logprobs=(), n_tokens=c.n_tokens)
                                         for c in g.completions)) for g in groups]
    return [g for part in dist.gather(slim) for g in part]


def _step_metrics(
    groups: Sequence[Group],
    n_kept: int,
    update: dict,
    lr: float,
    times: tuple[float, float, float, float],
) -> dict:
    completions = [c for g in groups for c in g.completions]
    tokens = [c.n_tokens for c in completions]
    outcomes = [group_outcome([x.correct for x in g.graded]) for g in groups]
    metrics = {
        "reward/mean": statistics.fmean(r for g in groups for r in g.rewards),
        "reward/correct": statistics.fmean(x.correct for g in groups for x in g.graded),
        "groups/all_correct": outcomes.count("all_correct") / len(groups),
        "groups/all_wrong": outcomes.count("all_wrong") / len(groups),
        "groups/mixed": outcomes.count("mixed") / len(groups),
        "groups/skipped_constant": len(groups) - n_kept,
        "tokens/mean": statistics.fmean(tokens),
        "tokens/max": max(tokens),
        "tokens/thinking_mean": statistics.fmean(c.n_thinking_tokens for c in completions),
        "tokens/truncated": sum(c.finish_reason == "length" for c in completions) / len(completions),
        "train/lr": lr,
        **update,
        "time/sampling_s": times[1] - times[0],
        "time/grading_s": times[2] - times[1],
        "time/training_s": times[3] - times[2],
        "time/step_s": times[3] - times[0],
    }
    for name in groups[0].graded[0].reward_parts:
        metrics[f"reward/{name}"] = statistics.fmean(x.reward_parts[name] for g in groups for x in g.graded)
    return {k: (v if not isinstance(v, float) or math.isfinite(v) else None) for k, v in metrics.items()}
