"""``mathrl rejection-sample``: sample the policy N times per problem, keep its shortest correct
answer (or every correct one): the efficiency study's SFT data."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from mathrl.commands.distill import add_collect_arguments
    from mathrl.commands.eval import add_model_arguments

    add_model_arguments(parser)
    add_collect_arguments(parser, temperature=1.0, n=16)
    parser.add_argument("--keep", choices=("shortest", "all"), default="shortest",
                        help="per problem: the shortest correct sample (default) or all correct ones")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from mathrl.commands.distill import run_collect, show_collect_prompt
    from mathrl.sampling.factory import make_sampler

    if args.show_prompt:
        return show_collect_prompt(args, args.model)
    sampler = make_sampler(args.model, args.adapter, args.base_url, args.device, args.dtype, args.batch_size,
                           concurrency=args.concurrency, tinker=args.tinker)
    source = args.model + (f" + {args.adapter}" if args.adapter else "")
    return run_collect(args, sampler, source, verb="sampled")
