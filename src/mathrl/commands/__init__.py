"""One module per ``mathrl`` subcommand: ``add_arguments(parser)`` and a ``run(args)`` it sets."""

from __future__ import annotations

import argparse


def add_recipe_option(parser: argparse.ArgumentParser) -> None:
    """``--config FILE.yaml`` for option-style commands: the YAML's keys are the command's option
    names, flags on the command line override them (``mathrl.cli`` applies it before parsing)."""
    parser.add_argument("--config", dest="config_file", default=None, metavar="FILE.yaml",
                        help="take settings from a recipe (keys are this command's option names, "
                        "e.g. configs/study1/baseline.yaml); flags given here override it")
