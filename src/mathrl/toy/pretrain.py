"""``mathrl toy pretrain``: train the embedded tiny model from scratch on ``arith``.

The result is a standard Hugging Face folder (safetensors, config, tokenizer files, chat
template) that every other command loads like any model. Documents are chat exchanges (system
prompt, problem, reference trace), sometimes two in a row so the model also copes with a
preceding few-shot exchange; the loss covers assistant tokens only, taken from the chat
template's generation masks. Training is short on purpose: the base model should be mediocre
(30-70% greedy on test levels 1-3) so SFT and RL have room to show gains.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from mathrl.prompts import SYSTEM_PROMPT, PromptProtocol
from mathrl.seeding import seed_everything
from mathrl.tasks import arith
from mathrl.toy.model import new_tiny_model
from mathrl.toy.tokenizer import build_tokenizer
from mathrl.types import Problem

REPORT_FILE = "pretrain.json"


@dataclass(frozen=True)
class PretrainConfig:
    seed: int = 0
    steps: int = 1200
    batch_size: int = 32  # documents per step
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 30
    weight_decay: float = 0.1
    vocab_size: int = 1024
    tokenizer_problems: int = 20_000
    multi_turn_percent: int = 10
    # Levels cycle in this order: 1-3 (what the base is judged on) get 3/4 of the documents.
    train_levels: tuple[int, ...] = (1, 2, 3, 1, 2, 3, 4, 5)
    bucket_batches: int = 8  # documents of this many batches are sorted by length together
    no_system_prompt_percent: int = 20
    # A short last phase teaches a habit RL can remove: in this share of multi-step problems the
    # trace works every step out but reports the first step's result as the answer (answering
    # with an intermediate quantity, a failure real models show on GSM8K). Fresh optimizer,
    # constant habit_lr, documents from another seed. habit_steps=0: no such phase.
    habit_steps: int = 200
    habit_lr: float = 3e-4
    sloppy_answer_percent: int = 60
    eval_levels: tuple[int, ...] = arith.EVAL_LEVELS
    eval_problems: int = arith.EVAL_PROBLEMS


# The strong teacher shipped beside tiny (``tiny-teacher``): the same recipe trained 3.3x longer,
# always working its answers out.
TEACHER_CONFIG = PretrainConfig(steps=4000, habit_steps=0, sloppy_answer_percent=0)


def lr_at(step: int, cfg: PretrainConfig) -> float:
    """Linear warmup, then cosine decay to ``min_lr_ratio * lr``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    floor = cfg.min_lr_ratio
    return cfg.lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def _documents(cfg: PretrainConfig) -> Iterator[list[dict[str, str]]]:
    rng = random.Random(f"pretrain-docs/{cfg.seed}")
    problems = arith.iter_problems("train", seed=cfg.seed, levels=cfg.train_levels)
    while True:
        p = next(problems)
        system = "" if rng.randrange(100) < cfg.no_system_prompt_percent else SYSTEM_PROMPT
        messages = PromptProtocol(system_prompt=system).messages(p, answer=_reference(p, cfg, rng))
        if rng.randrange(100) < cfg.multi_turn_percent:
            q = next(problems)
            messages += PromptProtocol(system_prompt="").messages(q, answer=_reference(q, cfg, rng))
        yield messages


def _reference(p: Problem, cfg: PretrainConfig, rng: random.Random) -> str:
    """The reference trace, or for some multi-step problems one that answers the first step's result."""
    # The draw happens only when the option is on, so the main phase (sloppy_answer_percent=0)
    # reproduces models built before it existed bit for bit.
    if not cfg.sloppy_answer_percent:
        return p.solution
    steps = arith.step_results(p.solution)
    if len(steps) < 2 or rng.randrange(100) >= cfg.sloppy_answer_percent:
        return p.solution
    return p.solution.replace(f"\\boxed{{{p.answer}}}", f"\\boxed{{{steps[0]}}}")


def _batches(tokenizer, cfg: PretrainConfig) -> Iterator[dict[str, torch.Tensor]]:
    """Batches of documents of similar length (little padding), in a seeded random order."""
    rng = random.Random(f"pretrain-batches/{cfg.seed}")
    docs = _documents(cfg)
    while True:
        pool = [next(docs) for _ in range(cfg.batch_size * cfg.bucket_batches)]
        enc = tokenizer.apply_chat_template(pool, return_dict=True,
                                            return_assistant_tokens_mask=True)
        tokenized = sorted(zip(enc["input_ids"], enc["assistant_masks"], strict=True),
                           key=lambda doc: len(doc[0]))
        size = cfg.batch_size
        chunks = [tokenized[i:i + size] for i in range(0, len(tokenized), size)]
        rng.shuffle(chunks)
        for chunk in chunks:
            yield _collate(chunk, tokenizer.pad_token_id)


def _collate(docs: list[tuple[list[int], list[int]]], pad: int) -> dict[str, torch.Tensor]:
    width = max(len(ids) for ids, _ in docs)
    rows, masks, labels = [], [], []
    for ids, assistant in docs:
        fill = width - len(ids)
        rows.append(ids + [pad] * fill)
        masks.append([1] * len(ids) + [0] * fill)
        labels.append([t if a else -100 for t, a in zip(ids, assistant, strict=True)]
                      + [-100] * fill)
    return {"input_ids": torch.tensor(rows), "attention_mask": torch.tensor(masks),  # (B, T)
            "labels": torch.tensor(labels)}


def _print(line: str) -> None:
    print(line, flush=True)


def pretrain(out_dir: Path, cfg: PretrainConfig, log: Callable[[str], None] = _print) -> dict:
    """Build the tokenizer, train the model, measure greedy accuracy, write the folder.

    The folder is written next to ``out_dir`` and renamed into place, so an interrupted run
    never leaves a half-written model behind.
    """
    from mathrl.sampling.hf import HFSampler
    from mathrl.toy.evaluate import arith_accuracy

    seed_everything(cfg.seed)
    t0 = time.time()
    corpus = (text for p in arith.generate("train", cfg.tokenizer_problems, seed=cfg.seed)
              for text in (p.problem, p.solution, SYSTEM_PROMPT))
    tokenizer = build_tokenizer(corpus, cfg.vocab_size)
    model = new_tiny_model(tokenizer)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"tokenizer: {len(tokenizer)} tokens; model: {n_params:,} parameters")

    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embed" not in n)]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay},
         {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr, betas=(0.9, 0.95))
    batches = _batches(tokenizer, replace(cfg, sloppy_answer_percent=0))
    model.train()
    loss_ema = None
    for step in range(cfg.steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, cfg)
        loss = model(**next(batches)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss_ema = loss.item() if loss_ema is None else 0.95 * loss_ema + 0.05 * loss.item()
        if step % 100 == 0 or step == cfg.steps - 1:
            log(f"step {step:5d}/{cfg.steps}  loss {loss_ema:.4f}  lr {lr_at(step, cfg):.2e}  "
                f"{time.time() - t0:.0f}s")
    before_habit = None
    if cfg.habit_steps:
        test = arith.eval_problems(cfg.eval_levels, cfg.eval_problems)
        before_habit = arith_accuracy(HFSampler(model.eval(), tokenizer), test)["accuracy"]
        log(f"greedy accuracy before the habit phase: {before_habit:.1%}")
        model.train()
        habit_optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.habit_lr, betas=(0.9, 0.95),
                                            weight_decay=cfg.weight_decay)
        habit_batches = _batches(tokenizer, replace(cfg, seed=cfg.seed + 1))
        for _ in range(cfg.habit_steps):
            loss = model(**next(habit_batches)).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            habit_optimizer.step()
            habit_optimizer.zero_grad(set_to_none=True)
        log(f"habit phase: {cfg.habit_steps} steps, loss {loss.item():.4f}  {time.time() - t0:.0f}s")
    model.eval()
    train_s = time.time() - t0

    test = arith.eval_problems(cfg.eval_levels, cfg.eval_problems)
    accuracy = arith_accuracy(HFSampler(model, tokenizer), test)
    report = {"config": asdict(cfg), "parameters": n_params, "vocab_size": len(tokenizer),
              "train_seconds": round(train_s, 1), "final_loss": round(loss_ema, 4),
              "accuracy_before_habit": before_habit, **accuracy}
    log(f"greedy accuracy on arith test levels {list(cfg.eval_levels)}: "
        f"{accuracy['accuracy']:.1%} ({accuracy['n']} problems)")

    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    return report
