"""``mathrl eval``: evaluate a model on benchmarks; per-sample records, metrics, resumable."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """How to reach a model: in process (``--model``, ``--adapter``) or over HTTP (``--base-url``)."""
    parser.add_argument("--model", required=True, help="'tiny', a model folder, or a hub id "
                        "(with --base-url: the model name the server serves)")
    parser.add_argument("--adapter", default=None, help="PEFT (LoRA) adapter folder")
    parser.add_argument("--base-url", default=None, help="OpenAI-compatible server, e.g. "
                        "http://localhost:8000/v1 (vLLM, SGLang, mathrl serve)")
    parser.add_argument("--tinker", nargs="?", const="", default=None, metavar="URL",
                        help="sample on the Tinker service (URL default: $TINKER_BASE_URL, else "
                        "Tinker's): --model is its base model name, --adapter a tinker:// path or a Tinker "
                        "run's final/; the key from $TINKER_API_KEY")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--batch-size", type=int, default=64, help="sequences decoded together")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    from mathrl.commands import add_prompt_arguments, add_recipe_option

    # The protocol's defaults are EvalConfig's (mathrl.eval.run), the one place they are set; this
    # module is imported to build the CLI, so they are read without importing the eval machinery.
    default = _eval_defaults()
    add_recipe_option(parser)
    add_prompt_arguments(parser)
    parser.add_argument("--benchmarks", required=True, help="comma-separated names, e.g. math500,aime2024")
    parser.add_argument("--out", required=True, type=Path, help="run folder, e.g. runs/baseline")
    parser.add_argument("--n", type=int, default=default["n"],
                        help=f"samples per problem (default {default['n']})")
    parser.add_argument("--temperature", type=float, default=default["temperature"],
                        help=f"default {default['temperature']} (greedy)")
    parser.add_argument("--top-p", type=float, default=default["top_p"])
    parser.add_argument("--max-tokens", type=int, default=default["max_tokens"])
    parser.add_argument("--num-problems", type=int, default=None, help="seeded, stable subsample")
    parser.add_argument("--seed", type=int, default=default["seed"])
    parser.add_argument("--chunk-size", type=int, default=default["chunk_size"],
                        help="problems per resumable unit (part of the run's settings)")
    parser.add_argument("--data-dir", default=None, help="benchmark files (default $MATHRL_DATA_DIR)")
    parser.set_defaults(run=run)


def _eval_defaults() -> dict:
    import dataclasses

    from mathrl.eval.config import EvalConfig

    return {f.name: f.default for f in dataclasses.fields(EvalConfig) if f.default is not dataclasses.MISSING}


def run(args: argparse.Namespace) -> int:
    from rich import box
    from rich.table import Table

    from mathrl.commands import prompt_from_args, show_prompts
    from mathrl.console import make_console, make_progress
    from mathrl.data import REGISTRY
    from mathrl.errors import UserError
    from mathrl.eval.config import EvalConfig
    from mathrl.eval.run import evaluate, summary_table
    from mathrl.sampling.factory import make_sampler

    benchmarks = tuple(b.strip() for b in args.benchmarks.split(",") if b.strip())
    unknown = [b for b in benchmarks if b not in REGISTRY]
    if unknown:
        raise UserError(f"--benchmarks: unknown {', '.join(unknown)}; see `mathrl data list`")
    cfg = EvalConfig(model=args.model, adapter=args.adapter, benchmarks=benchmarks, n=args.n,
                     temperature=args.temperature, top_p=args.top_p, max_tokens=args.max_tokens,
                     num_problems=args.num_problems, seed=args.seed, prompt=prompt_from_args(args),
                     shuffle_seed=args.shuffle_seed, chunk_size=args.chunk_size)
    if args.show_prompt:
        from mathrl.data import load_dataset

        return show_prompts(args.model, cfg.prompt, [
            load_dataset(b, args.data_dir, num_problems=cfg.num_problems, seed=cfg.seed,
                         shuffle_seed=cfg.shuffle_seed) for b in benchmarks])
    sampler = make_sampler(args.model, args.adapter, args.base_url, args.device, args.dtype, args.batch_size,
                           tinker=args.tinker)
    console = make_console()
    with make_progress(console) as bar:
        def progress(name):
            task = bar.add_task(name, total=None)
            return lambda done, total: bar.update(task, completed=done, total=total)

        results = evaluate(sampler, cfg, args.out, args.data_dir, progress)
    header, rows = summary_table(results)
    table = Table(title=f"{args.model} (temperature {cfg.temperature}, max {cfg.max_tokens} tokens"
                  f"{', few-shot ' + cfg.prompt.few_shot if cfg.prompt.few_shot != 'none' else ''}); "
                  "tokens: mean/median/p90",
                  box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    for column in header:
        table.add_column(column, no_wrap=True)
    for row in rows:
        table.add_row(*row)
    console.print(table)
    for name, m in results.items():
        timing = m["timing"]
        if timing["tokens_per_second"]:
            console.print(f"{name}: {timing['new_tokens']} new tokens in {timing['sampling_seconds']:.1f}s "
                          f"({timing['tokens_per_second']:.0f} tokens/s)")
    console.print(f"wrote {args.out}/eval/<benchmark>/{{samples.jsonl,metrics.json}}")
    return 0
