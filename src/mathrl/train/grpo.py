"""``mathrl grpo``: reinforcement learning with verifiable rewards (GRPO as the studies ran it).

One step: sync the engine to the current weights; take ``groups_per_batch`` training problems
(a seeded permutation per epoch) and sample ``group_size`` completions of each; grade them with
the one grader and score them with the recipe's rewards; compute group advantages and drop
groups with no reward variance; then, for each of ``num_substeps`` parts of the kept groups,
``forward_backward`` on their datums with the recipe's loss and ``optim_step``. The RL math
(and its deviations from the paper) is in :mod:`mathrl.train.rl`, the losses in
:mod:`mathrl.train.losses`, the rewards in :mod:`mathrl.train.rewards`; the learner and the
engine hide where the weights live (:mod:`mathrl.train.learner`, :mod:`mathrl.train.rollouts`).

Resuming is exact: problem order is a function of (seed, epoch), the sampling seed a function of
(seed, step), and checkpoints hold weights, optimizer, RNG states and the rewards' records.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from mathrl.data import load_dataset
from mathrl.errors import UserError
from mathrl.prompts import PromptProtocol
from mathrl.sampling import SamplingParams, encode_prompt
from mathrl.sampling.chunked import chunk_seed
from mathrl.train.ahead import RolloutsAhead, fresh
from mathrl.train.config import TrainConfig
from mathrl.train.learner import AdamParams, Learner
from mathrl.train.local import Plan
from mathrl.train.losses import ALIASES, LOSSES, KLEstimator, Loss, TisLevel
from mathrl.train.rewards import RewardSet
from mathrl.train.rl import (
    Normalization,
    group_advantages,
    is_constant,
    merge_updates,
    rl_datums,
    split_groups,
    step_metrics,
)
from mathrl.train.rollouts import RolloutSettings, rollout_engine
from mathrl.train.runs import TrainRun, open_run
from mathrl.types import Group, Problem
from mathrl.watchdog import phase

# Truncated IS's cap for rollouts sampled ahead (rollout.max_staleness >= 1) unless tis_cap says:
# the value of Yao et al. 2025 and verl's default.
STALE_TIS_CAP = 2.0


@dataclass(frozen=True, kw_only=True)
class GRPOConfig(TrainConfig):
    # Training problems: a registered name (math_train, math_hard, gsm8k_train, arith_train), a file.
    dataset: str
    levels: tuple[int, ...] | None = None  # e.g. [4, 5]: hard problems only
    num_problems: int | None = None  # seeded subsample of the training set
    shuffle_seed: int | None = None  # or the first num_problems of a hub-style shuffle with this seed
    group_size: int = 16  # K samples per problem
    groups_per_batch: int = 8  # problems per step
    num_substeps: int = 1  # optimizer steps per batch of rollouts, each on a part of its groups
    max_tokens: int = 2048
    temperature: float = 1.0
    lr: float = 4e-5
    # The loss, by its registered name (mathrl.train.losses), and its config (Tinker's
    # loss_fn_config: ppo and cispo's clip_low_threshold / clip_high_threshold, dro's beta).
    loss: str = "importance_sampling"
    loss_config: dict[str, float] = field(default_factory=dict)
    # ppo's ratio range [1 - clip_low, 1 + clip_high] (DAPO's clip-higher) unless loss_config sets it.
    clip_low: float = 0.2
    clip_high: float = 0.28
    kl_coef: float = 0.0
    kl_estimator: KLEstimator = "k3_is"
    # Truncated importance sampling against sampler/trainer mismatch (losses.py): cap on
    # pi_trainer / pi_sampler, per token or per sequence; None: off, except with
    # rollout.max_staleness >= 1 (rollouts of older weights), where it is STALE_TIS_CAP. A cap
    # of .inf is the plain ratio.
    tis_cap: float | None = None
    tis_level: TisLevel = "token"
    normalization: Normalization = "token_sum"
    scale_advantages: bool = False  # divide by the group's std (GRPO paper); off as in Dr. GRPO
    rewards: dict[str, float] = field(default_factory=lambda: {"correct": 1.0})
    sampler_batch_size: int = 256  # sequences decoded together (in process)
    rollout: RolloutSettings = field(default_factory=RolloutSettings)  # where to sample
    prompt: PromptProtocol = field(default_factory=PromptProtocol)  # eval uses it too, unless eval.prompt

    def __post_init__(self):
        super().__post_init__()  # plugins first: they may register the loss and rewards named here
        RewardSet(self.rewards)
        self.make_loss()
        if self.group_size < 2:
            raise ValueError("group_size must be >= 2 (advantages are relative to the group)")
        if self.num_substeps < 1:
            raise ValueError("num_substeps must be >= 1")
        if self.rollout.max_staleness and "logprobs" not in self.make_loss().needs:
            raise ValueError(f"rollout.max_staleness >= 1 trains on rollouts of older weights, which loss "
                             f"{self.loss} cannot correct: it reads no sampler logprobs")
        if self.num_substeps > 1 and self.truncation_cap is not None:
            raise ValueError("tis_cap takes the loss's ratio against the trainer's current probabilities, so "
                             "with num_substeps > 1 the later substeps would not clip against the pre-update "
                             "policy: use one or the other"
                             + (" (rollout.max_staleness >= 1 turns it on: set num_substeps: 1)"
                                if self.tis_cap is None else ""))
        if self.rollout.engine == "vllm" and self.finetune != "lora":
            raise ValueError("rollout.engine 'vllm' loads a LoRA adapter each step; vLLM has no stable "
                             "endpoint that reloads full weights: full fine-tuning rolls out in process or "
                             "through mathrl serve (rollout.engine: serve)")
        self.check_learner()

    @property
    def truncation_cap(self) -> float | None:
        """The truncated-IS cap in effect: ``tis_cap``, else STALE_TIS_CAP when rollouts may be stale."""
        if self.tis_cap is not None:
            return self.tis_cap
        return STALE_TIS_CAP if self.rollout.max_staleness else None

    def make_loss(self) -> Loss:
        config = {}
        if self.loss in ("ppo", "ppo_clip"):
            config = {"clip_low_threshold": 1 - self.clip_low, "clip_high_threshold": 1 + self.clip_high}
        spec = LOSSES.get(ALIASES.get(self.loss, self.loss))  # an unknown name: Loss says so
        cap = self.truncation_cap if spec and "logprobs" in spec.needs else self.tis_cap
        return Loss(self.loss, {**config, **self.loss_config}, self.kl_coef, self.kl_estimator, cap,
                    self.tis_level)


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
    """The problems of step ``step``: epoch-wise seeded permutations cut in batches (a last
    partial batch dropped or kept per ``last_batch``)."""
    epoch, index = divmod(step, steps_per_epoch(len(problems), groups_per_batch, last_batch))
    order = list(range(len(problems)))
    random.Random(f"grpo/{seed}/{epoch}").shuffle(order)
    return [problems[i] for i in order[index * groups_per_batch : (index + 1) * groups_per_batch]]


def train_grpo(cfg: GRPOConfig, out_dir: str | Path, log: Callable[[str], None] = print,
               progress: Callable[[int, int, dict], None] | None = None) -> dict:
    """Train per ``cfg`` into ``out_dir``, resuming from its last checkpoint. Returns final metrics
    (on every rank under torchrun; evals only on rank 0)."""
    loss = cfg.make_loss()
    plan = Plan(cfg.micro_batch_size, cfg.micro_batch_tokens, None, cfg.logprob_chunk_tokens, cfg.temperature)
    with open_run(out_dir, cfg, log, plan, reference=loss.needs_reference, progress=progress) as run:
        return _train(cfg, run, loss)


def _train(cfg: GRPOConfig, run: TrainRun, loss: Loss) -> dict:
    learner, log = run.learner, run.log
    dataset = load_dataset(cfg.dataset, cfg.data_dir, levels=cfg.levels, num_problems=cfg.num_problems,
                           seed=cfg.seed, shuffle_seed=cfg.shuffle_seed)
    problems = list(dataset.problems)
    if not problems:
        raise UserError(f"{cfg.dataset}: no problems selected")
    per_epoch = steps_per_epoch(len(problems), cfg.groups_per_batch, cfg.last_batch)
    total_steps = run.total_steps(per_epoch)
    per_step = min(len(problems), cfg.groups_per_batch)
    log(f"{dataset.name}: {len(problems)} problems ({dataset.origin}); {per_epoch} steps per epoch, "
        f"{total_steps} steps")
    substeps = f"{cfg.num_substeps} optimizer step{'s' if cfg.num_substeps > 1 else ''}"
    log(f"effective batch: {per_step} problems x {cfg.group_size} samples = {per_step * cfg.group_size} "
        f"sequences per step, {substeps} per batch, "
        f"micro-batches of <= {cfg.micro_batch_size} sequences"
        f"{f' and {cfg.micro_batch_tokens:,} tokens' if cfg.micro_batch_tokens else ''}; "
        f"<= {per_step * cfg.group_size * cfg.max_tokens:,} completion tokens per step")
    rewards = RewardSet(cfg.rewards)
    states = {"rewards": rewards}
    grader = run.grader(dataset.extract)
    step = run.resume(states)
    params = SamplingParams(temperature=cfg.temperature, max_tokens=cfg.max_tokens,
                            enable_thinking=cfg.prompt.thinking)

    def batch_of(step: int) -> tuple[list[Problem], dict[str, list[int]]]:
        batch = step_problems(problems, cfg.groups_per_batch, cfg.seed, step, cfg.last_batch)
        return batch, {p.id: encode_prompt(run.tokenizer, cfg.prompt.messages(p, dataset.name),
                                           cfg.prompt.thinking) for p in batch}

    def seeded(step: int) -> SamplingParams:  # a prompt's samples depend on this and the prompt alone
        return replace(params, seed=chunk_seed(cfg.seed, "grpo", step))

    def train_step(step: int, batch, prompts, completions, graded, sampled_by: int, times: dict) -> dict:
        """Score, train and measure one step's rollouts (sampled by version ``sampled_by``)."""
        t0 = time.perf_counter()
        groups = rewards.groups(batch, completions, graded,
                                lambda r: group_advantages(r, cfg.scale_advantages))
        # Rollouts older than max_staleness are never trained on (the producer keeps them fresh).
        usable = fresh(step, sampled_by, cfg.rollout.max_staleness)
        kept = [g for g in groups if usable and not is_constant(g.rewards)]
        times["grading_s"] = times.get("grading_s", 0.0) + time.perf_counter() - t0
        t0 = time.perf_counter()
        adam = run.adam(step, total_steps)
        updates = update(learner, loss, kept, prompts, cfg, adam)
        times["training_s"] = time.perf_counter() - t0
        metrics = step_metrics(groups, len(kept), merge_updates(updates), adam.learning_rate, times)
        metrics["rollout/policy_version"] = sampled_by
        metrics["rollout/staleness"] = step - sampled_by  # optimizer steps behind the weights they update
        metrics["rollout/dropped_stale"] = 0 if usable else len(groups)
        if not usable:
            log(f"step {step + 1}: dropped {len(groups)} groups sampled by policy version {sampled_by}, "
                f"more than rollout.max_staleness={cfg.rollout.max_staleness} steps old")
        return metrics

    last: dict = {}
    with rollout_engine(cfg.rollout, learner, cfg.model, cfg.sampler_batch_size, cfg.lora.rank, log,
                        run.dist) as engine:
        if cfg.rollout.max_staleness:
            return _train_ahead(cfg, run, engine, grader, states, step, total_steps, batch_of, seeded,
                                train_step)

        def eval_sampler():  # the weights of the step just taken (a collective: every rank calls it)
            engine.sync(step, learner)
            return engine.sampler(cfg.eval.batch_size)

        while step < total_steps:
            t0 = time.perf_counter()
            with phase("publish"):
                engine.sync(step, learner)
            t_synced = time.perf_counter()
            batch, prompts = batch_of(step)
            with phase("sampling"):
                completions = engine.sample([prompts[p.id] for p in batch], cfg.group_size, seeded(step))
            sampled_by = engine.version
            engine.pause()  # the engine's memory is the trainer's until the next sync
            t_sampled = time.perf_counter()
            with phase("grading"):
                graded = grader.grade_groups(batch, completions)
            times = {"publish_s": t_synced - t0, "sampling_s": t_sampled - t_synced,
                     "grading_s": time.perf_counter() - t_sampled}
            last = train_step(step, batch, prompts, completions, graded, sampled_by, times)
            step += 1
            last["time/step_s"] = time.perf_counter() - t0
            run.end_step(step, total_steps, last, states, eval_sampler)
        return run.finish(step, last, states, eval_sampler)


def _train_ahead(cfg: GRPOConfig, run: TrainRun, engine, grader, states: dict, step: int, total_steps: int,
                 batch_of, seeded, train_step) -> dict:
    """The loop with rollouts sampled up to ``rollout.max_staleness`` steps ahead
    (:mod:`mathrl.train.ahead`): a producer thread samples and grades each rank's share of a
    step's batch on its engine; this loop gathers the shares, trains, and publishes after each
    optimizer step."""
    learner, dist = run.learner, run.dist

    def produce(step: int):  # in the producer thread: no collective, and the only tokenizer user
        t0 = time.perf_counter()
        batch, prompts = batch_of(step)
        mine = [batch[i] for i in (dist.share(len(batch)) if dist.enabled else range(len(batch)))]
        with phase("sampling"):
            completions = engine.sample_here([prompts[p.id] for p in mine], cfg.group_size, seeded(step))
        t_sampled = time.perf_counter()
        with phase("grading"):
            graded = grader.grade_here(mine, completions)
        return (batch, prompts), (completions, graded, t_sampled - t0, time.perf_counter() - t_sampled)

    last: dict = {}
    with RolloutsAhead(engine, produce, range(step, total_steps), cfg.rollout.max_staleness) as ahead:
        ahead.publish(learner.save_for_sampler, step)

        def eval_sampler():  # the newest weights, the producer held until training goes on
            ahead.hold()
            ahead.load(ahead.published)
            dist.barrier()
            return engine.sampler(cfg.eval.batch_size)

        while step < total_steps:
            t0 = time.perf_counter()
            with phase("waiting for rollouts"):
                got = ahead.take(step)
            t_taken = time.perf_counter()
            (batch, prompts), share = got.payload
            parts = dist.gather(share)  # every rank's share, in rank order
            completions = [group for part in parts for group in part[0]]
            graded = [group for part in parts for group in part[1]]
            # The producer's seconds (the slowest rank's), spent while the previous step trained.
            times = {"rollout_wait_s": t_taken - t0, "sampling_s": max(p[2] for p in parts),
                     "grading_s": max(p[3] for p in parts)}
            last = train_step(step, batch, prompts, completions, graded, got.version, times)
            step += 1
            t_trained = time.perf_counter()
            ahead.publish(learner.save_for_sampler, step)
            last["time/publish_s"] = time.perf_counter() - t_trained
            last["time/step_s"] = time.perf_counter() - t0
            run.end_step(step, total_steps, last, states, eval_sampler)
        return run.finish(step, last, states, eval_sampler)


def update(learner: Learner, loss: Loss, kept: Sequence[Group], prompts: dict[str, list[int]],
           cfg: GRPOConfig, adam: AdamParams) -> list[dict]:
    """``num_substeps`` optimizer steps, each on a contiguous part of the kept groups (weights
    normalised within the part, as if it were the batch); each substep's metrics."""
    # Every call made before any result is read: a remote learner has them all queued.
    calls = [(learner.forward_backward(rl_datums(part, prompts, cfg.normalization, cfg.max_tokens), loss),
              learner.optim_step(adam)) for part in (split_groups(kept, cfg.num_substeps) if kept else [])]
    return [{**result.metrics, **stepped} for result, stepped in calls]
