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
        help="run folder (default runs/<config name>); rerun the same command to resume",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, "configs/tiny/sft.yaml")
    parser.set_defaults(run=run)


def progress_bar(console):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        console=console,
        transient=True,
    )


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from mathrl.config import load_config
    from mathrl.train.sft import SFTConfig, train_sft

    cfg = load_config(SFTConfig, args.config, args.overrides)
    out = args.out or Path("runs") / args.config.stem
    console = Console()
    with progress_bar(console) as bar:
        task = bar.add_task("sft", total=None, info="")

        def progress(step, total, metrics):
            bar.update(
                task,
                completed=step,
                total=total,
                info=f"loss {metrics['train/loss']:.4f}  lr {metrics['train/lr']:.2e}",
            )

        results = train_sft(
            cfg, out, log=lambda line: console.print(line, markup=False, highlight=False), progress=progress
        )
    console.print(
        f"done: {out} (loss {results.get('train/loss', float('nan')):.4f}"
        + "".join(
            f", {k.split('/')[1]} {100 * v:.1f}%" for k, v in results.items() if k.endswith("/accuracy")
        )
        + ")",
        markup=False,
        highlight=False,
    )
    return 0
