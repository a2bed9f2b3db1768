"""What a study recipe on Tinker costs in tokens: an estimate computed from the recipe and the
benchmark files, printed as the README's table.

    python scripts/tinker_tokens.py [RECIPE.yaml ...]   # default: every configs/study*/tinker/ recipe

Counted per run (training, then its final evaluation):
- sampled: completion tokens drawn (RL rollouts, teacher or rejection samples, evaluations), at
  most max_tokens each: an upper bound (the studies' mean lengths are far below it).
- prefill: prompt tokens sent with every sample request: one prompt per group, since Tinker
  samples a group's K completions from one request.
- trained: tokens through forward_backward (prompt + completion of every RL sequence, at most
  max_length of every SFT example): an upper bound, as groups with zero reward variance are
  not trained on and most sequences stop early.
Prompt tokens are the prompt's characters / 4 (a rule of thumb for BPE on English and LaTeX; the
studies' tokenizers are not on this machine), plus 8 tokens a message for the chat template.
SFT example counts are the studies' (3,825 and 94 traces) until the trace files exist.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHARS_PER_TOKEN = 4
TEMPLATE_TOKENS_PER_MESSAGE = 8
STUDY_TRACES = {"runs/study1/traces_math_hard.jsonl": 3435, "runs/study1/traces_olympiad.jsonl": 390,
                "runs/study2/rs_traces.jsonl": 94}  # study 1 L.93, study 2 L.34


def prompt_tokens(prompt, problems, dataset_name: str) -> float:
    """Mean estimated prompt tokens of ``problems`` under the prompt protocol ``prompt``."""
    total = 0
    for p in problems:
        messages = prompt.messages(p, dataset_name)
        total += sum(len(m["content"]) for m in messages) / CHARS_PER_TOKEN
        total += TEMPLATE_TOKENS_PER_MESSAGE * (len(messages) + 1)
    return total / max(1, len(problems))


def eval_tokens(cfg, data_dir) -> tuple[float, float]:
    """(sampled, prefill) of a training run's final evaluation."""
    from mathrl.data import load_dataset

    eval_cfg = cfg.eval.config(cfg.model, cfg.seed, getattr(cfg, "prompt", None))

    sampled = prefill = 0.0
    for name in eval_cfg.benchmarks:
        d = load_dataset(name, data_dir, num_problems=eval_cfg.num_problems, seed=eval_cfg.seed,
                         shuffle_seed=eval_cfg.shuffle_seed)
        sampled += len(d.problems) * eval_cfg.n * eval_cfg.max_tokens
        prefill += len(d.problems) * prompt_tokens(eval_cfg.prompt, d.problems, d.name)
    return sampled, prefill


def grpo_tokens(cfg, data_dir) -> dict:
    from mathrl.data import load_dataset
    from mathrl.train.grpo import steps_per_epoch

    d = load_dataset(cfg.dataset, data_dir, levels=cfg.levels, num_problems=cfg.num_problems, seed=cfg.seed,
                     shuffle_seed=cfg.shuffle_seed)
    per_epoch = steps_per_epoch(len(d.problems), cfg.groups_per_batch, cfg.last_batch)
    steps = per_epoch * cfg.epochs if cfg.max_steps is None else min(per_epoch * cfg.epochs, cfg.max_steps)
    groups = steps * min(len(d.problems), cfg.groups_per_batch)
    prompt = prompt_tokens(cfg.prompt, d.problems, d.name)
    return {"steps": steps, "sampled": groups * cfg.group_size * cfg.max_tokens, "prefill": groups * prompt,
            "trained": groups * cfg.group_size * (prompt + cfg.max_tokens)}


def sft_tokens(cfg) -> dict:
    from mathrl.train.sft import epoch_batches

    examples = 0
    for path in cfg.data:
        file = Path(path)
        examples += (sum(1 for line in file.open() if line.strip()) if file.is_file() else STUDY_TRACES[path])
    per_epoch = len(epoch_batches(examples, cfg.batch_size, cfg.seed, 0, cfg.last_batch))
    steps = per_epoch * cfg.epochs if cfg.max_steps is None else min(per_epoch * cfg.epochs, cfg.max_steps)
    return {"steps": steps, "sampled": 0, "prefill": 0, "trained": steps * cfg.batch_size * cfg.max_length}


def collect_tokens(args, data_dir) -> dict:
    from mathrl.commands import prompt_from_args
    from mathrl.commands.data import parse_levels
    from mathrl.data import load_dataset

    d = load_dataset(args.dataset, data_dir, levels=parse_levels(args.levels), num_problems=args.num_problems,
                     seed=args.seed, shuffle_seed=args.shuffle_seed)
    prompt = prompt_tokens(prompt_from_args(args), d.problems, d.name)
    return {"steps": 0, "sampled": len(d.problems) * args.n * args.max_tokens,
            "prefill": len(d.problems) * prompt, "trained": 0}


def estimate(path: Path, data_dir) -> dict:
    """Token counts of the run ``path`` describes (its final evaluation included)."""
    from mathrl.config import load_config, read_recipe
    from mathrl.train.grpo import GRPOConfig
    from mathrl.train.sft import SFTConfig

    values, _ = read_recipe(path)
    if "teacher" in values or "keep" in values:
        from mathrl.cli import _apply_recipe, build_parser

        command = "distill" if "teacher" in values else "rejection-sample"
        parser, argv = build_parser(), [command, "--config", str(path)]
        _apply_recipe(parser, argv)
        return {"model": values.get("teacher", values.get("model")), **collect_tokens(parser.parse_args(argv),
                                                                                     data_dir)}
    cfg = load_config(SFTConfig if "data" in values else GRPOConfig, path)
    row = sft_tokens(cfg) if "data" in values else grpo_tokens(cfg, data_dir)
    sampled, prefill = eval_tokens(cfg, data_dir) if cfg.eval.benchmarks else (0, 0)
    row["sampled"] += sampled
    row["prefill"] += prefill
    return {"model": cfg.tinker.model or cfg.model, **row}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("recipes", nargs="*", type=Path)
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    recipes = args.recipes or sorted((ROOT / "configs").glob("study*/tinker/*.yaml"))
    print("| recipe | model | steps | sampled (M, <=) | prefill (M, est.) | trained (M, <=) |")
    print("|---|---|---:|---:|---:|---:|")
    for path in recipes:
        row = estimate(path, args.data_dir)
        name = path.resolve().relative_to((ROOT / "configs").resolve()) if "configs" in path.parts or \
            not args.recipes else path
        print(f"| {name} | {row['model']} | {row['steps'] or ''} | {row['sampled'] / 1e6:.1f} | "
              f"{row['prefill'] / 1e6:.2f} | {row['trained'] / 1e6:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
