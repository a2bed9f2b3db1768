"""``mathrl grpo CONFIG.yaml [key=value ...] [--out RUN_DIR]``: RL with verifiable rewards."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from mathrl.commands.sft import add_config_arguments

    add_config_arguments(parser, "configs/tiny/grpo.yaml")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from mathrl.commands.sft import run_recipe
    from mathrl.train.grpo import GRPOConfig, train_grpo

    def describe(m):
        return (f"reward {m.get('reward/mean') or 0:.3f}  correct {m.get('reward/correct') or 0:.2f}  "
                f"tokens {m.get('tokens/mean') or 0:.0f}  {m.get('time/step_s') or 0:.1f}s/step")

    return run_recipe(args, GRPOConfig, train_grpo, describe)
