"""``mathrl grpo CONFIG.yaml [key=value ...] [--out RUN_DIR]``: RL with verifiable rewards."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from mathrl.commands.sft import add_config_arguments

    add_config_arguments(parser, "configs/tiny/grpo.yaml")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from mathrl.commands.sft import progress_bar
    from mathrl.config import load_config
    from mathrl.train.grpo import GRPOConfig, train_grpo

    cfg = load_config(GRPOConfig, args.config, args.overrides)
    out = args.out or Path("runs") / args.config.stem
    console = Console()
    with progress_bar(console) as bar:
        task = bar.add_task("grpo", total=None, info="")

        def progress(step, total, m):
            bar.update(task, completed=step, total=total,
                       info=f"reward {m['reward/mean']:.3f}  correct {m['reward/correct']:.2f}  "
                            f"tokens {m['tokens/mean']:.0f}  {m['time/step_s']:.1f}s/step")

        results = train_grpo(cfg, out, log=lambda line: console.print(line, markup=False, highlight=False),
                             progress=progress)
    console.print(f"done: {out} (reward {results.get('reward/mean') or 0:.3f}"
                  + "".join(f", {k.split('/')[1]} {100 * v:.1f}%" for k, v in results.items()
                            if k.endswith("/accuracy")) + ")", markup=False, highlight=False)
    return 0
