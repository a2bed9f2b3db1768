"""``mathrl sft CONFIG.yaml [key=value ...] [--out RUN_DIR]``: LoRA or full fine-tuning on chat JSONL."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_config_arguments(parser: argparse.ArgumentParser, example: str) -> None:
    """The recipe arguments every training command takes."""
    parser.add_argument("config", type=Path, help=f"YAML recipe, e.g. {example}")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="override settings, e.g. lr=1e-4 lora.rank=16 eval.benchmarks=math500,aime2024",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="run folder (default runs/<group>/<name> for configs/<group>/<name>.yaml, else "
        "runs/<name>); rerun the same command to resume",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, "configs/tiny/sft.yaml")
    parser.set_defaults(run=run)


def default_run_dir(config: Path) -> Path:
    """``runs/<group>/<name>`` for a recipe ``configs/<group>/<name>.yaml`` (the folder the next
    recipe in a study reads, e.g. ``adapter: runs/study1/sft_a/final``; deeper groups likewise:
    ``configs/study1/tinker/sft_a.yaml`` -> ``runs/study1/tinker/sft_a``), else ``runs/<name>``."""
    from mathrl.config import recipe_path

    config = recipe_path(config)
    for parent in config.parents[1:]:
        if parent.name == "configs":
            return Path("runs") / config.relative_to(parent).with_suffix("")
    return Path("runs") / config.stem


def run_recipe(args: argparse.Namespace, config_class, train, describe) -> int:
    """Load ``config_class`` from the recipe and overrides, run ``train`` into the run folder with
    a progress bar (``describe(metrics)`` is its live text), and print a closing line."""
    from rich.progress import TextColumn

    from mathrl.config import load_config
    from mathrl.console import make_console, make_progress
    from mathrl.distributed import from_env

    cfg = load_config(config_class, args.config, args.overrides)
    out = args.out or default_run_dir(args.config)
    if from_env()[0] != 0:  # under torchrun, rank 0 alone shows progress and the closing line
        train(cfg, out, log=lambda line: None)
        return 0
    console = make_console()
    with make_progress(console, TextColumn("{task.fields[info]}")) as bar:
        task = bar.add_task(args.command, total=None, info="")

        def progress(step, total, metrics):
            bar.update(task, completed=step, total=total, info=describe(metrics))

        results = train(cfg, out, log=lambda line: console.print(line, markup=False, highlight=False),
                        progress=progress)
    accuracies = "".join(f", {k.split('/')[1]} {100 * v:.1f}%" for k, v in results.items()
                         if k.endswith("/accuracy"))
    console.print(f"done: {out} ({describe(results)}{accuracies})", markup=False, highlight=False)
    return 0


def run(args: argparse.Namespace) -> int:
    from mathrl.train.sft import SFTConfig, train_sft

    def describe(m):
        return f"loss {m.get('train/loss', float('nan')):.4f}  lr {m.get('train/lr', 0):.2e}"

    return run_recipe(args, SFTConfig, train_sft, describe)
