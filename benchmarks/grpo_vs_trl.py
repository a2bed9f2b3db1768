"""GRPO step time and result: mathrl vs TRL's ``GRPOTrainer`` (the peer), in one run on a CPU.

    python benchmarks/grpo_vs_trl.py                 # tiny model, arith, 20 steps each
    python benchmarks/grpo_vs_trl.py --steps 40 --groups 16 --group-size 8

Both start from the shipped ``tiny`` model with a fresh LoRA adapter of the same shape and
train on the same arith problems with the same group size, problems per step, completion
length, temperature, learning rate and binary correctness reward (the one grader), one
optimizer step per generation batch, no KL, rewards not scaled by the group std, token-mean
loss (TRL's ``dapo``, mathrl's ``token_mean``). Reported: seconds per step (median over steps
after the first), the ratio mathrl / TRL, and greedy held-out accuracy on the arith test split
before and after.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch


def held_out_accuracy(model, tokenizer, n: int) -> float:
    from mathrl.sampling.hf import HFSampler
    from mathrl.tasks import arith
    from mathrl.toy.evaluate import arith_accuracy

    was_training = model.training
    model.eval()
    accuracy = arith_accuracy(HFSampler(model, tokenizer), arith.eval_problems(arith.EVAL_LEVELS, n))[
        "accuracy"
    ]
    model.train(was_training)
    return accuracy


def run_mathrl(args, out: Path) -> dict:
    from mathrl.config import load_config
    from mathrl.train.grpo import GRPOConfig, train_grpo

    cfg = load_config(
        GRPOConfig,
        None,
        [
            "model=tiny",
            "dataset=arith_train",
            "levels=[1,2,3]",
            f"num_problems={args.problems}",
            f"group_size={args.group_size}",
            f"groups_per_batch={args.groups}",
            f"max_tokens={args.max_tokens}",
            f"temperature={args.temperature}",
            f"max_steps={args.steps}",
            f"lr={args.lr}",
            "schedule=constant",
            "loss=importance_sampling",
            "normalization=token_mean",
            f"lora.rank={args.rank}",
            f"lora.alpha={2 * args.rank}",
            "device=cpu",
            f"seed={args.seed}",
        ],
    )
    train_grpo(cfg, out, log=lambda line: None)
    times = [r["time/step_s"] for r in _metrics(out) if "time/step_s" in r]
    from mathrl.models import load_model, load_tokenizer

    model = load_model("tiny", torch.device("cpu"), torch.float32, adapter=out / "final")
    return {"step_s": times, "accuracy": held_out_accuracy(model, load_tokenizer("tiny"), args.eval_problems)}


def _metrics(out: Path) -> list[dict]:
    import json

    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def run_trl(args, out: Path) -> dict:
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from mathrl.data import load_dataset
    from mathrl.grading import grade
    from mathrl.models import load_model, load_tokenizer
    from mathrl.prompts import PromptProtocol

    problems = load_dataset(
        "arith_train", levels=(1, 2, 3), num_problems=args.problems, seed=args.seed
    ).problems
    data = Dataset.from_list([{"prompt": PromptProtocol().messages(p), "answer": p.answer} for p in problems])

    def correctness(completions, answer, **_):
        return [float(grade(c[0]["content"], a)) for c, a in zip(completions, answer, strict=True)]

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.times, self.start = [], None

        def on_step_begin(self, *_, **__):
            self.start = time.perf_counter()

        def on_step_end(self, *_, **__):
            self.times.append(time.perf_counter() - self.start)

    tokenizer = load_tokenizer("tiny")
    model = load_model("tiny", torch.device("cpu"), torch.float32).train()
    config = GRPOConfig(
        output_dir=str(out),
        max_steps=args.steps,
        per_device_train_batch_size=args.groups * args.group_size,
        num_generations=args.group_size,
        gradient_accumulation_steps=1,
        steps_per_generation=1,
        max_completion_length=args.max_tokens,
        temperature=args.temperature,
        learning_rate=args.lr,
        lr_scheduler_type="constant",
        beta=0.0,
        scale_rewards="none",
        loss_type="dapo",
        num_iterations=1,
        adam_beta1=0.9,
        adam_beta2=0.95,
        max_grad_norm=1.0,
        use_cpu=True,
        report_to="none",
        logging_steps=1,
        save_strategy="no",
        seed=args.seed,
        shuffle_dataset=True,
        bf16=False,
    )
    timer = StepTimer()
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=correctness,
        args=config,
        train_dataset=data,
        processing_class=tokenizer,
        callbacks=[timer],
        peft_config=LoraConfig(
            r=args.rank, lora_alpha=2 * args.rank, target_modules="all-linear", task_type="CAUSAL_LM"
        ),
    )
    trainer.train()
    return {
        "step_s": timer.times,
        "accuracy": held_out_accuracy(trainer.model, tokenizer, args.eval_problems),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--groups", type=int, default=16, help="problems per step")
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--problems", type=int, default=2000)
    parser.add_argument("--eval-problems", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", choices=("mathrl", "trl"), default=None)
    args = parser.parse_args()
    torch.manual_seed(args.seed)

    from mathrl.models import load_model, load_tokenizer

    base = held_out_accuracy(
        load_model("tiny", torch.device("cpu"), torch.float32), load_tokenizer("tiny"), args.eval_problems
    )
    print(
        f"tiny, arith: {args.steps} steps of {args.groups} problems x {args.group_size} samples, "
        f"{args.max_tokens} tokens, lr {args.lr}, LoRA rank {args.rank}, {torch.get_num_threads()} threads"
    )
    print(f"held-out greedy accuracy before training: {100 * base:.1f}% ({args.eval_problems} problems)")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, fn in (("mathrl", run_mathrl), ("trl", run_trl)):
            if args.only and name != args.only:
                continue
            start = time.perf_counter()
            r = fn(args, Path(tmp) / name)
            r["wall_s"] = time.perf_counter() - start
            r["median_step_s"] = statistics.median(r["step_s"][1:] or r["step_s"])
            results[name] = r
            print(
                f"{name:7s} {r['median_step_s']:6.2f} s/step (median of {len(r['step_s']) - 1} after the "
                f"first), {r['wall_s']:.0f} s in all; held-out accuracy {100 * r['accuracy']:.1f}% "
                f"({100 * (r['accuracy'] - base):+.1f})"
            )
    if len(results) == 2:
        ratio = results["mathrl"]["median_step_s"] / results["trl"]["median_step_s"]
        print(
            f"mathrl / TRL seconds per step: {ratio:.2f}x (goal <= 0.5x); accuracy "
            f"{100 * results['mathrl']['accuracy']:.1f}% vs {100 * results['trl']['accuracy']:.1f}%"
        )


if __name__ == "__main__":
    main()
