"""``mathrl toy pretrain`` and ``mathrl toy eval``: build and measure the embedded tiny model."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="toy_command", metavar="TOY_COMMAND", required=True)

    pre = sub.add_parser("pretrain", help="train the tiny Qwen3 model from scratch on arith",
                         description="Train the tiny Qwen3 model from scratch on arith (CPU, a "
                         "few minutes) and write a Hugging Face model folder to --out.")
    pre.add_argument("--out", required=True, type=Path, help="model folder to write")
    pre.add_argument("--seed", type=int, default=0)
    pre.add_argument("--steps", type=int, default=None, help="optimizer steps (default: the "
                     "shipped model's)")
    pre.add_argument("--habit-steps", type=int, default=None, help="steps of the habit phase "
                     "(default: the shipped model's)")
    pre.add_argument("--teacher", action="store_true", help="the shipped teacher's recipe (tiny-teacher: "
                     "longer, always working answers out) instead of tiny's")
    pre.set_defaults(run=run_pretrain)

    tr = sub.add_parser("traces", help="arith reference traces as chat JSONL (SFT data for the toy task)",
                        description="Write arith problems with their reference traces as chat JSONL, as "
                        "`mathrl distill` writes them; --recheck-percent 85 makes the verbose traces "
                        "the efficiency study's baseline is trained on.")
    tr.add_argument("--out", required=True, type=Path)
    tr.add_argument("--num-problems", type=int, default=2000)
    tr.add_argument("--levels", default="1,2,3")
    tr.add_argument("--split", default="train", choices=("train", "test"))
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--recheck-percent", type=int, default=None,
                    help="a re-check line after each step with this probability (0: none, 100: every "
                    "step; default: as generated, in 40%% of traces)")
    tr.set_defaults(run=run_traces)

    ev = sub.add_parser("eval", help="greedy accuracy on the arith test split (levels 1-3)",
                        description="Greedy accuracy of a model on the standard arith test set.")
    ev.add_argument("--model", default="tiny", help="'tiny', a model folder, or a hub id")
    ev.add_argument("--adapter", default=None, help="optional PEFT (LoRA) adapter folder")
    ev.add_argument("--levels", default="1,2,3", help="comma-separated levels (default 1,2,3)")
    ev.add_argument("--num-problems", type=int, default=None, help="default 300")
    ev.add_argument("--show", type=int, default=0, help="print this many problems with responses")
    ev.add_argument("--device", default="auto")
    ev.add_argument("--json", action="store_true", help="print the result as JSON")
    ev.set_defaults(run=run_eval)


def run_pretrain(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from mathrl.toy.pretrain import TEACHER_CONFIG, PretrainConfig, pretrain

    cfg = replace(TEACHER_CONFIG if args.teacher else PretrainConfig(), seed=args.seed)
    if args.steps is not None:
        cfg = replace(cfg, steps=args.steps)
    if args.habit_steps is not None:
        cfg = replace(cfg, habit_steps=args.habit_steps)
    report = pretrain(args.out, cfg)
    print(f"wrote {args.out} (greedy accuracy {report['accuracy']:.1%} on "
          f"{report['n']} arith test problems)")
    return 0


def run_traces(args: argparse.Namespace) -> int:
    from mathrl.commands.data import parse_levels
    from mathrl.fileio import write_atomic
    from mathrl.prompts import PromptProtocol
    from mathrl.tasks import arith
    from mathrl.traces import Trace

    problems = arith.generate(args.split, args.num_problems, seed=args.seed, levels=parse_levels(args.levels))
    recheck = "as-generated" if args.recheck_percent is None else f"{args.recheck_percent}%"
    lines = []
    for p in problems:
        solution = p.solution if args.recheck_percent is None else \
            arith.with_rechecks(p.solution, args.recheck_percent, seed=args.seed)
        metadata = {"problem_id": p.id, "dataset": f"arith_{args.split}", "level": p.level,
                    "source": f"reference/recheck-{recheck}"}
        lines.append(Trace(tuple(PromptProtocol().messages(p, answer=solution)), metadata).to_json())
    write_atomic(args.out, "".join(line + "\n" for line in lines))
    print(f"wrote {len(lines)} {args.split} traces (re-checks: {recheck}) to {args.out}")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from mathrl.console import make_console
    from mathrl.errors import UserError
    from mathrl.grading import extract_answer, grade
    from mathrl.sampling.factory import make_sampler
    from mathrl.tasks import arith
    from mathrl.toy.evaluate import accuracy_report, greedy_completions

    try:
        levels = tuple(int(x) for x in args.levels.split(","))
        problems = arith.eval_problems(levels, args.num_problems or arith.EVAL_PROBLEMS)
    except ValueError as err:
        raise UserError(f"--levels: {err}") from None
    sampler = make_sampler(args.model, args.adapter, device=args.device)
    completions = greedy_completions(sampler, problems)

    console = make_console()
    for p, c in zip(problems[:args.show], completions, strict=False):
        mark = "[green]correct[/]" if grade(c.text, p.answer) else "[red]wrong[/]"
        console.rule(f"{p.id} (level {p.level})")
        console.print(p.problem, markup=False)
        console.print(c.text, markup=False, style="dim")
        console.print(f"extracted {extract_answer(c.text)!r}, gold {p.answer!r}: {mark}")
    result = accuracy_report(problems, completions)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        levels_text = ", ".join(f"L{k} {v:.1%}" for k, v in result["per_level"].items())
        console.print(f"{args.model}: greedy accuracy {result['accuracy']:.1%} "
                      f"({result['correct']}/{result['n']}) on arith test levels "
                      f"{','.join(map(str, levels))} [{levels_text}], "
                      f"mean {result['mean_tokens']:.1f} tokens")
    return 0
