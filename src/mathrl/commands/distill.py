"""``mathrl distill``: sample a teacher on training problems, keep the correct traces as chat JSONL.

The shared machinery (``add_collect_arguments``, ``run_collect``) also serves
``mathrl rejection-sample``: the two differ in whom they sample and what they keep.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_collect_arguments(parser: argparse.ArgumentParser, temperature: float, n: int) -> None:
    from mathrl.commands import add_prompt_arguments, add_recipe_option
    from mathrl.commands.data import add_data_source_arguments

    add_recipe_option(parser)
    add_prompt_arguments(parser)

    parser.add_argument("--dataset", required=True, help="training problems: a registered name "
                        "(math_hard, gsm8k_train, arith_train, ...), a file, or hf:ORG/NAME")
    parser.add_argument("--out", required=True, type=Path, help="chat JSONL to write (appended as it goes)")
    parser.add_argument("--n", "--num-samples", dest="n", type=int, default=n, help=f"samples per problem "
                        f"(default {n})")
    parser.add_argument("--levels", default=None, help="comma-separated levels to keep, e.g. 4,5")
    parser.add_argument("--num-problems", type=int, default=None, help="seeded, stable subsample")
    parser.add_argument("--temperature", type=float, default=temperature, help=f"default {temperature}")
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--max-tokens", type=int, default=2048)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--chunk-size", type=int, default=32, help="problems per resumable unit")
    parser.add_argument("--concurrency", type=int, default=64, help="parallel requests (HTTP)")
    add_data_source_arguments(parser)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--teacher", required=True, help="'tiny', a model folder or hub id (in "
                        "process), or the URL of an OpenAI-compatible server (vLLM, SGLang, mathrl serve)")
    parser.add_argument("--teacher-model", default=None, help="with a URL: the served model's name "
                        "(default: the one the server lists)")
    parser.add_argument("--adapter", default=None, help="PEFT adapter on an in-process teacher")
    parser.add_argument("--tinker", nargs="?", const="", default=None, metavar="URL",
                        help="sample the teacher on the Tinker service (URL default: $TINKER_BASE_URL, "
                        "else Tinker's): --teacher is its base model name; the key from $TINKER_API_KEY")
    parser.add_argument("--api-key", default=None, help="for hosted endpoints (default $OPENAI_API_KEY)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--batch-size", type=int, default=64, help="sequences decoded together (in process)")
    add_collect_arguments(parser, temperature=0.6, n=1)
    parser.set_defaults(run=run, keep="all")


def run(args: argparse.Namespace) -> int:
    import os

    from mathrl.errors import UserError
    from mathrl.sampling.factory import make_sampler

    url = args.teacher if args.teacher.startswith(("http://", "https://")) else None
    if args.tinker is not None and url:
        raise UserError(f"--tinker: --teacher is the base model's name on the service, not a URL ({url})")
    if args.show_prompt:
        return show_collect_prompt(args, args.teacher_model or args.teacher)
    api_key = args.api_key or os.environ.get("OPENAI_API_KEY")
    if args.tinker is not None:
        sampler = make_sampler(args.teacher, args.adapter, tinker=args.tinker)
        source = args.teacher + (f" + {args.adapter}" if args.adapter else "")
    elif url:
        from mathrl.sampling.openai import OpenAISampler

        name = args.teacher_model
        if name is None:
            served = OpenAISampler(url, "", api_key=api_key, max_retries=2).served_models()
            if len(served) != 1:
                raise UserError(f"{url} serves {served or 'no models'}; name one with --teacher-model")
            name = served[0]
        sampler = make_sampler(name, base_url=url, api_key=api_key, concurrency=args.concurrency)
        source = name  # the model is what decides the samples; the URL may move between runs
    else:
        sampler = make_sampler(args.teacher, args.adapter, device=args.device, dtype=args.dtype,
                               batch_size=args.batch_size)
        source = args.teacher + (f" + {args.adapter}" if args.adapter else "")
    return run_collect(args, sampler, source, verb="distilled", endpoint=url)


def selected_dataset(args: argparse.Namespace):
    """The problems a collect command works on, as its options select them."""
    from mathrl.commands.data import load_from_args, parse_levels

    return load_from_args(args, args.dataset, levels=parse_levels(args.levels),
                          num_problems=args.num_problems, seed=args.seed, shuffle_seed=args.shuffle_seed)


def show_collect_prompt(args: argparse.Namespace, model: str) -> int:
    from mathrl.commands import prompt_from_args, show_prompts

    return show_prompts(model, prompt_from_args(args), [selected_dataset(args)])


def run_collect(args: argparse.Namespace, sampler, source: str, verb: str,
                endpoint: str | None = None) -> int:

    from mathrl.collect import CollectConfig, collect_traces
    from mathrl.commands import prompt_from_args
    from mathrl.console import make_console, make_progress

    dataset = selected_dataset(args)
    cfg = CollectConfig(source=source, dataset=dataset.name, n=args.n, keep=args.keep,
                        temperature=args.temperature, top_p=args.top_p, max_tokens=args.max_tokens,
                        seed=args.seed, prompt=prompt_from_args(args), chunk_size=args.chunk_size)
    console = make_console()
    with make_progress(console) as bar:
        task = bar.add_task(f"{verb} {dataset.name}", total=len(dataset))
        first: list[int] = []

        def progress(done, total):
            if not first:  # the first report is what a previous run left
                first.append(done)
                if done:
                    console.print(f"resuming {args.out}: {done} of {total} problems already done",
                                  markup=False, highlight=False)
            bar.update(task, completed=done, total=total)

        stats = collect_traces(sampler, dataset.problems, dataset.extract, cfg, args.out, progress, endpoint)
    console.print(
        f"{dataset.name}: {stats['problems']} problems x {args.n} samples from {source}"
        f"{f' @ {endpoint}' if endpoint else ''}\n"
        f"  correct: {stats['correct_samples']}/{stats['samples']} samples "
        f"({100 * stats['sample_yield']:.1f}% yield); {stats['problems_with_correct']} problems "
        f"({100 * stats['problem_yield']:.1f}%) have a kept trace\n"
        f"  kept {stats['traces']} traces: median {stats['median_kept_tokens']:.0f} tokens, mean "
        f"{stats['mean_kept_tokens']:.1f} vs {stats['mean_sample_tokens']:.1f} for all samples "
        f"({100 * stats['token_reduction']:.1f}% fewer)\n"
        f"wrote {args.out}", markup=False, highlight=False)
    return 0
