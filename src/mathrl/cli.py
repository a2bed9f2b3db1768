"""The ``mathrl`` command line: one entry point, one subcommand per stage.

Each subcommand module exposes ``add_arguments(parser)`` and ``run(args) -> int``; this file
only wires them up, and imports a module when its command runs, so ``mathrl --help`` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from mathrl import __version__
from mathrl.errors import UserError
from mathrl.watchdog import DEFAULT_S, limit_from, watching

# The long-running commands: a hang in them is reported (mathrl.watchdog), not waited on.
WATCHED = ("eval", "distill", "rejection-sample", "sft", "grpo", "serve")

# (name, module under mathrl.commands, one-line description). Subcommands with their own
# subcommands list them in their module.
COMMANDS: list[tuple[str, str, str]] = [
    ("demo", "demo", "both studies in miniature on the embedded tiny model: train, evaluate, report"),
    ("eval", "eval", "evaluate a model on benchmarks: graded samples, accuracy with CIs, token stats"),
    ("data", "data", "list the registered datasets, or show problems of one (or of your file)"),
    ("grade", "grade", "grade responses or answers against gold answers with the one grader"),
    ("overlap", "overlap", "exact and n-gram overlap between a training set and a benchmark"),
    ("distill", "distill", "sample a teacher (local or an OpenAI-compatible URL), keep correct traces"),
    ("rejection-sample", "rejection_sample", "sample the policy N times, keep the shortest correct answer"),
    ("traces", "traces", "merge and filter chat JSONL trace files; print their statistics"),
    ("sft", "sft", "supervised fine-tuning (LoRA or full) on chat JSONL, assistant tokens only"),
    ("grpo", "grpo", "GRPO reinforcement learning with verifiable rewards (correctness, format, efficiency)"),
    ("report", "report", "the ablation table from run folders: accuracy ± CI, paired tests, tokens"),
    ("view", "view", "one self-contained HTML page to browse and compare the graded samples of runs"),
    ("serve", "serve", "serve a model over an OpenAI-compatible HTTP API (a teacher, or for tests)"),
    ("toy", "toy", "the embedded tiny model: pretrain it on arith, or measure its accuracy"),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mathrl",
        description="Post-train language models for mathematical reasoning on your own hardware.")
    parser.add_argument("--version", action="version", version=f"mathrl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module, help_text in COMMANDS:
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        _module(module).add_arguments(cmd)
        if name in WATCHED:
            cmd.add_argument("--watchdog-s", type=float, default=None,
                             help="no progress for this long prints every thread's stack and the phase "
                             "it was in, on every rank, and exits (default $MATHRL_WATCHDOG_S or "
                             f"{DEFAULT_S:g}; 0: off)")
    return parser


def _module(name: str):
    return importlib.import_module(f"mathrl.commands.{name}")


def _apply_recipe(parser: argparse.ArgumentParser, argv: list[str]) -> None:
    """``--config FILE.yaml`` on an option-style command (eval, distill, rejection-sample): the
    recipe's settings become the command's defaults, flags on the command line override them."""
    path = None
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            path = argv[i + 1]
        elif arg.startswith("--config="):
            path = arg.partition("=")[2]
    if path is None:
        return
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    command = next((a for a in argv if a in subparsers.choices), None)
    sub = subparsers.choices.get(command)
    if sub is None or not any(a.dest == "config_file" for a in sub._actions):
        return
    from mathrl.config import option_defaults

    sub.set_defaults(**option_defaults(sub, path))


def main(argv: list[str] | None = None) -> int:
    from mathrl.plugins import load_env_plugins

    try:
        load_env_plugins()
    except ValueError as err:
        print(f"mathrl: error: $MATHRL_PLUGINS: {err}", file=sys.stderr)
        return 2
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        _apply_recipe(parser, argv)
    except UserError as err:
        print(f"mathrl: error: {err}", file=sys.stderr)
        return 2
    args, extra = parser.parse_known_args(argv)
    # key=value overrides may come after options (`mathrl sft c.yaml --out r lr=1e-4`), which
    # argparse does not gather into a positional list by itself.
    if extra and hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        limit = limit_from(getattr(args, "watchdog_s", None)) if args.command in WATCHED else 0
        with watching(limit, args.command, idle_ok=args.command == "serve"):
            return int(args.run(args) or 0)
    except UserError as err:
        print(f"mathrl {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mathrl {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        from mathrl.fileio import storage_message, storage_reason

        reason = storage_reason(err)  # a full or read-only disk met outside the writers that name their path
        if reason is None:
            raise
        print(f"mathrl {args.command}: error: {storage_message(reason, getattr(err, 'filename', None))}",
              file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
