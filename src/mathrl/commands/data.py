"""``mathrl data list`` and ``mathrl data show``: what datasets exist and what their rows look like."""

from __future__ import annotations

import argparse


def add_data_source_arguments(parser: argparse.ArgumentParser) -> None:
    """Options every command that loads a dataset shares."""
    parser.add_argument("--data-dir", default=None,
                        help="folder with the benchmark JSONL files (default: $MATHRL_DATA_DIR)")
    parser.add_argument("--skip-invalid", action="store_true",
                        help="skip (and count) invalid rows instead of stopping at the first")
    parser.add_argument("--problem-field", default="problem", help="problem column of a user file")
    parser.add_argument("--answer-field", default="answer", help="answer column of a user file")
    parser.add_argument("--split", default="train", help="split of an hf:ORG/NAME dataset")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="DATA_COMMAND", required=True)
    ls = sub.add_parser("list", help="registered datasets with row counts and sources")
    ls.add_argument("--data-dir", default=None, help="folder with the benchmark JSONL files")
    ls.add_argument("--json", action="store_true", help="one JSON object per dataset, for scripts")
    ls.set_defaults(run=run_list)
    show = sub.add_parser("show", help="print a few problems of a dataset or a file")
    show.add_argument("dataset", help="a registered name, a JSONL/JSON/CSV/parquet file, or hf:ORG/NAME")
    show.add_argument("--n", type=int, default=3, help="how many problems (default 3)")
    show.add_argument("--levels", default=None, help="comma-separated levels to keep")
    show.add_argument("--seed", type=int, default=0)
    add_data_source_arguments(show)
    show.set_defaults(run=run_show)
    check = sub.add_parser("check", help="grade every gold answer against itself; list those no response "
                           "could match")
    check.add_argument("datasets", nargs="*", metavar="DATASET",
                       help="registered names or files (default: every registered dataset with a local file)")
    check.add_argument("--json", action="store_true", help="one JSON object per dataset, for scripts")
    add_data_source_arguments(check)
    check.set_defaults(run=run_check)


def load_from_args(args: argparse.Namespace, name: str, **selection):
    """Load ``name`` with the data-source options of ``args`` (shared by every command)."""
    from mathrl.data import FieldMap, load_dataset

    fields = FieldMap(problem=args.problem_field, answer=args.answer_field)
    return load_dataset(name, args.data_dir, skip_invalid=args.skip_invalid, fields=fields,
                        split=args.split, **selection)


def parse_levels(text: str | None) -> tuple[int, ...] | None:
    from mathrl.errors import UserError

    if text is None:
        return None
    try:
        return tuple(int(x) for x in text.split(","))
    except ValueError:
        raise UserError(f"--levels: expected comma-separated integers, got {text!r}") from None


def run_list(args: argparse.Namespace) -> int:
    import json

    from rich.table import Table

    from mathrl.console import make_console
    from mathrl.data import REGISTRY, DataError, data_dir_from, load_dataset, local_file

    directory = data_dir_from(args.data_dir)
    rows = []
    for name, spec in REGISTRY.items():
        row = {"name": name, "kind": spec.kind, "rows": None, "skipped": None, "extract": spec.extract,
               "source": None, "description": spec.description}
        local = local_file(spec, args.data_dir)
        if spec.generate is None and not (local and local.is_file()):
            # Counting would download it: list where it would come from instead.
            row["source"] = (f"hf:{spec.hub.dataset_id} (from the hub)" if spec.hub
                             else f"needs {local or spec.file} (no hub source)")
        else:
            try:
                ds = load_dataset(name, args.data_dir)
                row.update(rows=len(ds), skipped=ds.skipped,
                           source=ds.origin.removeprefix(f"{directory}/") if directory else ds.origin)
            except DataError as err:
                row["source"] = f"unavailable: {err}"
        rows.append(row)
    if args.json:
        print("".join(json.dumps(row) + "\n" for row in rows), end="")
        return 0
    table = Table()
    for column in ("name", "kind", "rows", "skipped", "extract", "source", "description"):
        table.add_column(column, no_wrap=column == "name")  # the name is what a user types next: never cut
    for row in rows:
        table.add_row(row["name"], row["kind"], "-" if row["rows"] is None else str(row["rows"]),
                      "-" if row["skipped"] is None else str(row["skipped"]), row["extract"], row["source"],
                      row["description"])
    console = make_console()
    console.print(f"data directory: {directory or 'not set (--data-dir or MATHRL_DATA_DIR)'}")
    console.print(table)
    return 0


def run_show(args: argparse.Namespace) -> int:
    from mathrl.console import make_console

    ds = load_from_args(args, args.dataset, levels=parse_levels(args.levels),
                        num_problems=args.n, seed=args.seed)
    console = make_console()
    console.print(f"{ds.name}: {len(ds)} shown from {ds.origin}"
                  + (f" ({ds.skipped} rows skipped: no gold answer or invalid)" if ds.skipped else ""))
    for p in ds.problems:
        about = ", ".join(x for x in (p.level and f"level {p.level}", p.subject) if x)
        console.rule(f"{p.id} ({about})" if about else p.id)
        console.print(p.problem, markup=False, highlight=False)
        console.print(f"answer: {p.answer}" + (f"  (tolerance {p.tolerance})" if p.tolerance else ""),
                      markup=False, style="bold")
    return 0


def run_check(args: argparse.Namespace) -> int:
    """Every gold of each dataset graded against itself as a model would write it
    (:mod:`mathrl.grading.golds`); exit 1 when any cannot be matched."""
    import json

    from mathrl.console import make_console
    from mathrl.data import REGISTRY, local_file
    from mathrl.errors import UserError
    from mathrl.grading.golds import bad_golds

    names = args.datasets or [name for name, spec in REGISTRY.items()
                              if spec.generate is None and (local := local_file(spec, args.data_dir))
                              and local.is_file()]
    if not names:
        raise UserError("no dataset to check: name one, or set --data-dir / MATHRL_DATA_DIR")
    console = make_console()
    found_any = False
    for name in names:
        ds = load_from_args(args, name, check_golds=False)
        bad = bad_golds(ds.problems, ds.extract)
        found_any = found_any or bool(bad)
        if args.json:
            listed = [{"id": b.id, "answer": b.answer, "reason": b.reason} for b in bad]
            print(json.dumps({"dataset": name, "problems": len(ds), "skipped_rows": ds.skipped,
                              "bad_golds": listed}))
            continue
        rows = f"; {ds.skipped} rows skipped at load (no gold answer or invalid)" if ds.skipped else ""
        console.print(f"{name}: {len(ds)} problems ({ds.origin}), {len(bad)} gold answer"
                      f"{'' if len(bad) == 1 else 's'} no response could match{rows}",
                      markup=False, highlight=False)
        for b in bad:
            console.print(f"  {b.id}: {b.answer!r}: {b.reason}", markup=False, highlight=False)
    return 1 if found_any else 0
