"""``mathrl overlap TRAIN EVAL``: exact and n-gram overlap between a training set and a benchmark."""

from __future__ import annotations

import argparse

from mathrl.commands.data import add_data_source_arguments, load_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("train", help="training set: a registered name, a file, or hf:ORG/NAME")
    parser.add_argument("eval", help="benchmark: a registered name, a file, or hf:ORG/NAME")
    parser.add_argument("--ngram", type=int, default=13, help="n-gram length in words (default 13)")
    parser.add_argument("--examples", type=int, default=5, help="example pairs to print (default 5)")
    add_data_source_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from mathrl.console import make_console
    from mathrl.data.overlap import find_overlap

    train, evals = load_from_args(args, args.train), load_from_args(args, args.eval)
    report = find_overlap(train.problems, evals.problems, n=args.ngram)
    console = make_console()
    exact_ids, any_ids = report.eval_ids(exact=True), report.eval_ids(exact=False)
    console.print(f"{train.name} ({report.n_train}) vs {evals.name} ({report.n_eval}), "
                  f"after removing $ and whitespace:")
    console.print(f"  exact duplicates: {len(report.exact_pairs)} pairs, "
                  f"{len(exact_ids)} {evals.name} problems")
    console.print(f"  sharing a {report.n}-gram: {len(report.ngram_pairs)} more pairs; "
                  f"{len(any_ids)} {evals.name} problems overlap in all "
                  f"({len(any_ids) / max(1, report.n_eval):.1%})")
    for pair in report.pairs[:args.examples]:
        kind = ("exact" if pair.exact
                else f"{pair.shared_ngrams} shared {report.n}-grams ({pair.fraction:.0%})")
        console.rule(f"{pair.train.id}  ~  {pair.eval.id}: {kind}")
        console.print(pair.train.problem[:300], markup=False, highlight=False)
        console.print(pair.eval.problem[:300], markup=False, highlight=False, style="dim")
    return 0
