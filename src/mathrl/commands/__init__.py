"""One module per ``mathrl`` subcommand: ``add_arguments(parser)`` and a ``run(args)`` it sets."""

from __future__ import annotations

import argparse


def add_recipe_option(parser: argparse.ArgumentParser) -> None:
    """``--config FILE.yaml`` for option-style commands: the YAML's keys are the command's option
    names, flags on the command line override them (``mathrl.cli`` applies it before parsing)."""
    parser.add_argument("--config", dest="config_file", default=None, metavar="FILE.yaml",
                        help="take settings from a recipe (keys are this command's option names, "
                        "e.g. configs/study1/baseline.yaml); flags given here override it")


def add_prompt_arguments(parser: argparse.ArgumentParser) -> None:
    """The prompt protocol (:class:`mathrl.prompts.PromptProtocol`) as options, and
    ``--show-prompt``, which prints the exact prompt of the first problem and stops."""
    from mathrl.prompts import FEW_SHOTS, SYSTEM_PROMPT

    parser.add_argument("--system-prompt", default=SYSTEM_PROMPT,
                        help="system message ('' for none; default: the Qwen math prompt)")
    parser.add_argument("--few-shot", choices=FEW_SHOTS, default="none",
                        help="worked example before the question: tinker_math (the Tinker cookbook's, "
                        "the studies'), mathrl (this project's), or none (default)")
    parser.add_argument("--suffix", default="", help="appended to every question, e.g. ' Write your "
                        "answer in \\boxed{} format.' (default none)")
    parser.add_argument("--thinking", action=argparse.BooleanOptionalAction, default=True,
                        help="let models with a thinking mode think (default on)")
    parser.add_argument("--shuffle-seed", type=int, default=None,
                        help="take the first --num-problems of the rows shuffled as datasets' "
                        ".shuffle(seed=N) does (a hub script's subset); default: a stable seeded sample")
    parser.add_argument("--show-prompt", action="store_true",
                        help="print the exact prompt of the first problem (messages, and the rendered "
                        "text where the tokenizer is at hand) and exit without sampling")


def prompt_from_args(args: argparse.Namespace):
    from mathrl.prompts import PromptProtocol

    return PromptProtocol(system_prompt=args.system_prompt, few_shot=args.few_shot, suffix=args.suffix,
                          thinking=args.thinking)


def show_prompts(model: str, prompt, datasets) -> int:
    """Print ``prompt``'s messages for the first problem of each dataset and, if ``model``'s
    tokenizer is on this machine (embedded, a folder, or the hub cache), the rendered text."""
    import json

    from mathrl.console import make_console
    from mathrl.models import local_tokenizer

    console = make_console()
    tokenizer = local_tokenizer(model)
    for dataset in datasets:
        if not dataset.problems:
            continue
        messages = prompt.messages(dataset.problems[0], dataset.name)
        console.rule(f"{dataset.name}: {dataset.problems[0].id}")
        print(json.dumps(messages, indent=2, ensure_ascii=False))
        if tokenizer is not None:
            console.rule(f"rendered by {model}'s chat template")
            print(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False,
                                                enable_thinking=prompt.thinking))
        else:
            console.print(f"({model}'s tokenizer is not on this machine: messages only)", markup=False)
    return 0
