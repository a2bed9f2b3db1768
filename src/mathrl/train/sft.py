"""``mathrl sft``: supervised fine-tuning on chat JSONL, loss on assistant tokens only.

The loop: documents -> (ids, assistant mask) -> each epoch a seeded permutation cut into batches
of ``batch_size`` sequences -> micro-batches of similar length -> summed token NLL over the whole
batch divided by its assistant-token count (so gradient accumulation gives exactly the loss of
the full batch) -> clip -> AdamW step with the scheduled learning rate.

Resuming is exact: the data order is a function of (seed, epoch), the schedule a function of
the step, and a checkpoint holds weights, optimizer and RNG states; a run killed and restarted
with the same command ends with the weights of an uninterrupted run.

Under torchrun each rank takes its share of every batch (and packs it, if ``packing``); the
token count that normalises the loss is summed over the ranks, so the update is the
one-process update of the same batch (:mod:`mathrl.distributed`).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from mathrl.distributed import SINGLE, Dist, accumulation, idle_backward, session
from mathrl.errors import UserError
from mathrl.traces import Trace, read_traces
from mathrl.train.batching import pack_rows, plan_micro_batches
from mathrl.train.policy import DEFAULT_CHUNK_TOKENS, LoraSettings
from mathrl.train.runs import EvalSettings, TrainRun
from mathrl.train.schedule import Schedule, lr_multiplier


@dataclass(frozen=True)
class SFTConfig:
    model: str
    data: tuple[str, ...]  # chat JSONL files, concatenated
    adapter: str | None = None  # continue training this LoRA adapter
    finetune: Literal["lora", "full"] = "lora"
    lora: LoraSettings = field(default_factory=LoraSettings)
    max_length: int = 4096
    overlong: Literal["drop", "truncate"] = "drop"  # truncating cuts the answer and the stop token
    epochs: int = 2
    max_steps: int | None = None  # stop after this many optimizer steps (None: all epochs)
    batch_size: int = 32  # sequences per optimizer step
    last_batch: Literal["keep", "drop"] = "keep"  # an epoch's last, smaller batch: its own step, or dropped
    micro_batch_size: int = 8  # sequences (packed: rows) per forward/backward
    micro_batch_tokens: int | None = None  # and at most this many padded tokens per forward/backward
    packing: bool = False  # several documents per row, each attending only to itself
    gradient_checkpointing: bool = False  # recompute layer activations in the backward pass
    logprob_chunk_tokens: int = DEFAULT_CHUNK_TOKENS  # LM-head rows at a time (bounds the logits' memory)
    lr: float = 2e-4
    schedule: Schedule = "linear"
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    adam_eps: float = 1e-8
    weight_decay: float = 0.0
    grad_clip: float = 1.0  # max global grad norm; 0 = off
    save_every: int = 0  # checkpoint every N steps (0: only at the end)
    keep_checkpoints: int = 2
    seed: int = 0
    device: str = "auto"
    dtype: str = "auto"
    mirror: str = "none"  # "tensorboard" or "wandb" mirror metrics.jsonl
    data_dir: str | None = None  # benchmark files for the final eval (default $MATHRL_DATA_DIR)
    eval: EvalSettings = field(default_factory=EvalSettings)

    def __post_init__(self):
        if not self.data:
            raise ValueError("data: name at least one chat JSONL file")
        if self.batch_size < 1 or self.micro_batch_size < 1:
            raise ValueError("batch_size and micro_batch_size must be >= 1")
        if self.micro_batch_tokens is not None and self.micro_batch_tokens < 1:
            raise ValueError("micro_batch_tokens must be >= 1 (or null for no token budget)")
        if self.epochs < 1:
            raise ValueError("epochs must be >= 1")


@dataclass(frozen=True)
class Example:
    """One tokenized document: ids and which of them the loss covers (assistant tokens)."""

    input_ids: tuple[int, ...]
    loss_mask: tuple[bool, ...]


def assistant_mask(tokenizer, messages: Sequence[dict]) -> tuple[list[int], list[bool]]:
    """Token ids of a chat and a mask of the assistant turns' tokens (thinking included).

    Templates with ``{% generation %}`` markers give the mask directly. Others (Qwen3's own, for
    one) are handled by rendering prefixes: assistant turn ``i`` covers the tokens between the
    rendering of messages[:i] with a generation prompt and that of messages[:i+1]. A template
    whose renderings are not prefixes of each other raises, since the mask would be wrong.
    """
    template = tokenizer.chat_template or ""
    if "{% generation %}" in template or "{%- generation %}" in template:
        enc = tokenizer.apply_chat_template(
            list(messages), tokenize=True, return_dict=True, return_assistant_tokens_mask=True
        )
        return list(enc["input_ids"]), [bool(m) for m in enc["assistant_masks"]]
    ids = _render(tokenizer, messages, add_generation_prompt=False)
    mask = [False] * len(ids)
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        start = _render(tokenizer, messages[:i], add_generation_prompt=True)
        end = _render(tokenizer, messages[: i + 1], add_generation_prompt=False)
        if ids[: len(start)] != start or ids[: len(end)] != end:
            raise UserError(
                "the chat template renders conversations so that earlier turns change "
                "(e.g. it drops the thinking of past turns); give the tokenizer a template "
                "with {% generation %} markers, or train on single-turn data"
            )
        span = ids[len(start) : len(end)]
        # The turn ends at its end-of-turn token; what the template adds after it ("\n") is not
        # generated by the model (generation stops there), so it is not learned either.
        if tokenizer.eos_token_id in span:
            span = span[: len(span) - span[::-1].index(tokenizer.eos_token_id)]
        for t in range(len(start), len(start) + len(span)):
            mask[t] = True
    return ids, mask


def _render(tokenizer, messages, add_generation_prompt: bool) -> list[int]:
    if not messages:
        return []
    return list(
        tokenizer.apply_chat_template(
            list(messages), tokenize=True, return_dict=False, add_generation_prompt=add_generation_prompt
        )
    )


def tokenize_traces(
    tokenizer, traces: Sequence[Trace], max_length: int, overlong: str
) -> tuple[list[Example], dict[str, int]]:
    """Examples and counts of what was truncated, dropped or had nothing to learn."""
    examples, counts = (
        [],
        {"documents": len(traces), "truncated": 0, "dropped_overlong": 0, "dropped_no_target": 0},
    )
    for trace in traces:
        ids, mask = assistant_mask(tokenizer, trace.messages)
        if len(ids) > max_length:
            if overlong == "drop":
                counts["dropped_overlong"] += 1
                continue
            ids, mask = ids[:max_length], mask[:max_length]
            counts["truncated"] += 1
        if not any(mask[1:]):  # position 0 is never predicted
            counts["dropped_no_target"] += 1
            continue
        examples.append(Example(tuple(ids), tuple(mask)))
    counts["examples"] = len(examples)
    return examples, counts


def epoch_batches(n_examples: int, batch_size: int, seed: int, epoch: int,
                  last_batch: str = "keep") -> list[list[int]]:
    """Example indices of each step of ``epoch``: a seeded permutation cut into batches; a last
    partial batch is kept or dropped per ``last_batch`` (unless it is the only one)."""
    order = list(range(n_examples))
    random.Random(f"sft/{seed}/{epoch}").shuffle(order)
    batches = [order[i : i + batch_size] for i in range(0, n_examples, batch_size)]
    if last_batch == "drop" and len(batches) > 1 and len(batches[-1]) < batch_size:
        batches.pop()
    return batches


def collate(rows: Sequence[Sequence[Example]], pad_id: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Right-padded (B, T) tensors of ids and loss mask; each row holds one document or, packed,
    several. A one-document-per-row batch gets an attention mask; a packed one gets position ids
    that restart at every document (and no mask), so each document attends only to itself."""
    width = max(sum(len(e.input_ids) for e in row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    loss_B_T = torch.zeros((len(rows), width), dtype=torch.bool)
    positions_B_T = torch.zeros((len(rows), width), dtype=torch.long)
    attention_B_T = torch.zeros((len(rows), width), dtype=torch.long)
    for b, row in enumerate(rows):
        at = 0
        for e in row:
            n = len(e.input_ids)
            ids[b, at:at + n] = torch.tensor(e.input_ids)
            loss_B_T[b, at + 1:at + n] = torch.tensor(e.loss_mask[1:])  # nothing predicts a first token
            positions_B_T[b, at:at + n] = torch.arange(n)
            at += n
        attention_B_T[b, :at] = 1
        positions_B_T[b, at:] = torch.arange(width - at)  # the padding is a segment of its own
    packed = any(len(row) > 1 for row in rows)
    return {
        "input_ids_B_T": ids.to(device),
        "attention_B_T": None if packed else attention_B_T.to(device),
        "position_ids_B_T": positions_B_T.to(device) if packed else None,
        "loss_B_T": loss_B_T.to(device),
    }


def sft_loss_sum(forward, batch: dict[str, torch.Tensor],
                 chunk_tokens: int = DEFAULT_CHUNK_TOKENS) -> torch.Tensor:
    """Summed negative log-likelihood of the masked (assistant) tokens of one micro-batch, under
    ``forward`` (a :class:`~mathrl.train.policy.LogprobForward`)."""
    logprobs_B_T, _ = forward(batch["input_ids_B_T"], batch["attention_B_T"], entropy=False,
                              target_B_T=batch["loss_B_T"], position_ids_B_T=batch["position_ids_B_T"],
                              chunk_tokens=chunk_tokens)
    return -(logprobs_B_T * batch["loss_B_T"]).sum()


def micro_batches(examples: Sequence[Example], size: int, max_tokens: int | None = None,
                  pack_to: int | None = None) -> list[list[list[Example]]]:
    """A batch as micro-batches of rows, in a fixed order: one document per row, sorted by length
    (less padding), or with ``pack_to`` documents packed first-fit into rows of that many tokens.
    At most ``size`` rows and ``max_tokens`` padded tokens per micro-batch."""
    if pack_to is None:
        rows = [[e] for e in examples]
    else:
        packed = pack_rows([len(e.input_ids) for e in examples], pack_to)
        rows = [[examples[i] for i in row] for row in packed]
    lengths = [sum(len(e.input_ids) for e in row) for row in rows]
    return [[rows[i] for i in micro] for micro in plan_micro_batches(lengths, size, max_tokens)]


def accumulate_gradients(forward, batch: Sequence[Example], pad_id: int, device: torch.device,
                         cfg: SFTConfig, dist: Dist = SINGLE) -> tuple[float, int, int]:
    """Forward and backward over one batch in micro-batches (packed if ``cfg.packing``), leaving
    the batch's gradient in ``.grad``: the summed token NLL over the batch's target-token count,
    which no micro-batch plan changes. Under torchrun ``batch`` is this rank's share and the count
    is every rank's. Returns (loss, target tokens, micro-batches), summed over ranks."""
    n_target = int(dist.sum([sum(sum(e.loss_mask[1:]) for e in batch)])[0])
    plan = micro_batches(batch, cfg.micro_batch_size, cfg.micro_batch_tokens,
                         cfg.max_length if cfg.packing else None)
    loss_total = 0.0
    for micro in accumulation(forward, plan, dist):
        if micro is None:
            idle_backward(forward, device)
            continue
        loss = sft_loss_sum(forward, collate(micro, pad_id, device), cfg.logprob_chunk_tokens) / n_target
        (loss * dist.world_size).backward()  # the gradient reduction averages; this makes it a sum
        loss_total += loss.item()
    loss_total, n_micro = dist.sum([loss_total, len(plan)])
    return loss_total, n_target, int(n_micro)


def train_sft(
    cfg: SFTConfig,
    out_dir: str | Path,
    log: Callable[[str], None] = print,
    progress: Callable[[int, int, dict], None] | None = None,
) -> dict:
    """Train per ``cfg`` into ``out_dir``, resuming from its last checkpoint. Returns final metrics."""
    with session(cfg.device) as dist:
        return _train(cfg, Path(out_dir), log, progress, dist)


def _train(cfg: SFTConfig, out_dir: Path, log, progress, dist: Dist) -> dict:
    run = TrainRun(out_dir, cfg, log, dist)
    log = run.log
    traces = [t for path in cfg.data for t in read_traces(path)]
    examples, counts = tokenize_traces(run.tokenizer, traces, cfg.max_length, cfg.overlong)
    if not examples:
        raise UserError(f"no training examples in {', '.join(cfg.data)} ({counts})")
    steps_per_epoch = len(epoch_batches(len(examples), cfg.batch_size, cfg.seed, 0, cfg.last_batch))
    total_steps = run.total_steps(steps_per_epoch)
    log(
        f"{counts['examples']} examples from {counts['documents']} documents "
        f"({counts['truncated']} truncated, {counts['dropped_overlong']} dropped as longer than "
        f"{cfg.max_length} tokens, {counts['dropped_no_target']} without assistant tokens); "
        f"{steps_per_epoch} steps per epoch, {total_steps} steps"
    )
    optimizer = run.make_optimizer()
    step, _ = run.resume(optimizer)
    pad_id = run.tokenizer.pad_token_id
    last: dict = {}
    while step < total_steps:
        epoch, index = divmod(step, steps_per_epoch)
        order = epoch_batches(len(examples), cfg.batch_size, cfg.seed, epoch, cfg.last_batch)
        batch = [examples[i] for i in order[index]]
        mine = [batch[i] for i in dist.share(len(batch))]
        start = time.perf_counter()
        lr = cfg.lr * lr_multiplier(step, total_steps, cfg.schedule, cfg.warmup_steps, cfg.min_lr_ratio)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss_total, n_target, n_micro = accumulate_gradients(run.forward, mine, pad_id, run.device, cfg, dist)
        grad_norm = run.clip_and_step(optimizer)
        step += 1
        seconds = time.perf_counter() - start
        n_tokens = sum(len(e.input_ids) for e in batch)
        last = {
            "train/loss": loss_total,
            "train/lr": lr,
            "train/grad_norm": grad_norm,
            "train/epoch": epoch + (index + 1) / steps_per_epoch,
            "train/sequences": len(batch),
            "train/micro_batches": n_micro,
            "train/target_tokens": n_target,
            "train/tokens_per_s": n_tokens / seconds,
            "time/step_s": seconds,
        }
        run.sink.log(last, step=step)
        if progress and dist.main:
            progress(step, total_steps, last)
        if cfg.save_every and step % cfg.save_every == 0 and step < total_steps:
            run.save(step, optimizer)
    return run.finish(total_steps, optimizer, last)
