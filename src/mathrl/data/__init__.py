"""Benchmarks and training sets: one registry of names, one loader for names, files and hub ids.

>>> ds = load_dataset("arith", num_problems=3)              # doctest: +SKIP
>>> load_dataset("math_hard", data_dir="../shared/data")   # doctest: +SKIP
>>> load_dataset("my.jsonl", fields=FieldMap(problem="question"))  # doctest: +SKIP
>>> load_dataset("hf:HuggingFaceH4/MATH-500", split="test")  # doctest: +SKIP
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from mathrl.data.registry import REGISTRY, DatasetSpec, register_dataset
from mathrl.data.rows import (
    USER_FILE_SUFFIXES,
    DataError,
    FieldMap,
    MissingAnswerError,
    Row,
    read_file_rows,
    read_hub_rows,
    row_to_problem,
)
from mathrl.data.select import select
from mathrl.grading.golds import BadGold, bad_golds
from mathrl.types import Problem

__all__ = ["REGISTRY", "DataError", "Dataset", "DatasetSpec", "FieldMap", "data_dir_from",
           "load_dataset", "local_file", "register_dataset", "select"]

DATA_DIR_ENV = "MATHRL_DATA_DIR"
HUB_PREFIX = "hf:"


@dataclass(frozen=True)
class Dataset:
    """Problems of one dataset, after validation and selection, and where they came from."""

    name: str
    problems: tuple[Problem, ...]
    origin: str  # file path, "hf:ID", or "generated"
    extract: str
    skipped: int  # invalid rows skipped (documented gaps, or all with skip_invalid)
    # Problems skipped because no response could match their gold answer (mathrl.grading.golds).
    bad_golds: tuple[BadGold, ...] = ()

    def __len__(self) -> int:
        return len(self.problems)


def data_dir_from(explicit: str | Path | None = None) -> Path | None:
    """``--data-dir`` if given, else ``$MATHRL_DATA_DIR``, else None (hub sources only)."""
    chosen = explicit or os.environ.get(DATA_DIR_ENV)
    return Path(chosen).expanduser() if chosen else None


def load_dataset(name_or_path: str | Path | DatasetSpec, data_dir: str | Path | None = None, *,
                 levels: Iterable[int] | None = None, subjects: Iterable[str] | None = None,
                 num_problems: int | None = None, seed: int = 0, shuffle: bool = False,
                 shuffle_seed: int | None = None, skip_invalid: bool = False, fields: FieldMap | None = None,
                 split: str = "train", check_golds: bool = True) -> Dataset:
    """Load a registered name (or a DatasetSpec), a user file (JSONL/JSON/CSV/parquet) or
    ``hf:ID[:CONFIG]``.

    Rows are validated (a problem and an answer, a sane level, unique ids); the first bad row
    raises a DataError naming file, line and field, or with ``skip_invalid`` is skipped and
    counted. ``fields`` maps a user file's or hub dataset's columns; ``split`` is for ``hf:``.
    Each gold answer is graded against itself (:mod:`mathrl.grading.golds`): a problem whose
    gold no response could match is skipped, counted in ``bad_golds`` and announced in one line
    on stderr (``check_golds=False``: kept, for ``mathrl data check``). Then :func:`select`
    filters and subsamples.
    """
    if isinstance(name_or_path, DatasetSpec):
        spec, name = name_or_path, name_or_path.name
    else:
        name = str(name_or_path)
        spec = REGISTRY.get(name)
    if spec is not None and spec.generate is not None:
        problems = spec.generate(tuple(levels) if levels else None, num_problems)
        chosen = select(problems, subjects=subjects, seed=seed, shuffle=shuffle)
        return Dataset(name, tuple(chosen), spec.origin, spec.extract, 0)
    if spec is not None:
        rows, origin, row_fields, skip_missing = _spec_rows(spec, data_dir)
        spec_levels = spec.levels
        extract = spec.extract
    elif name.startswith(HUB_PREFIX):
        dataset_id, _, config = name[len(HUB_PREFIX):].partition(":")
        rows, origin = read_hub_rows(dataset_id, config or None, split), name
        row_fields, skip_missing, spec_levels, extract = fields or FieldMap(), False, None, "boxed"
    elif Path(name).suffix.lower() in USER_FILE_SUFFIXES or Path(name).exists():
        rows, origin = read_file_rows(Path(name)), name
        row_fields, skip_missing, spec_levels, extract = fields or FieldMap(), False, None, "boxed"
        name = Path(name).stem
    else:
        raise DataError(f"unknown dataset {name!r}: not a registered name ({', '.join(REGISTRY)}), "
                        f"a file ({'/'.join(USER_FILE_SUFFIXES)}), or {HUB_PREFIX}ORG/NAME")
    problems, skipped = _validated(rows, row_fields, name, skip_invalid, skip_missing)
    if spec_levels is not None:
        problems = [p for p in problems if p.level in spec_levels]
    bad: list[BadGold] = []
    if check_golds:
        bad = bad_golds(problems, extract)
        if bad:
            ids = {b.id for b in bad}
            problems = [p for p in problems if p.id not in ids]
            print(f"{name}: skipped {len(bad)} problem{'s' if len(bad) > 1 else ''} whose gold answer no "
                  f"response could match (first: {bad[0].id}: {bad[0].reason}); `mathrl data check "
                  f"{name if spec is not None else name_or_path}` lists them", file=sys.stderr, flush=True)
    chosen = select(problems, levels=levels, subjects=subjects, num_problems=num_problems,
                    seed=seed, shuffle=shuffle, shuffle_seed=shuffle_seed)
    return Dataset(name, tuple(chosen), origin, extract, skipped, tuple(bad))


def local_file(spec: DatasetSpec, data_dir: str | Path | None = None) -> Path | None:
    """Where ``spec``'s file would be in the data directory (whether or not it exists)."""
    directory = data_dir_from(data_dir)
    return directory / spec.file if directory and spec.file else None


def _spec_rows(spec: DatasetSpec, data_dir: str | Path | None) -> tuple[Iterator[Row], str, FieldMap, bool]:
    local = local_file(spec, data_dir)
    if local is not None and local.is_file():
        return read_file_rows(local), str(local), spec.fields, spec.skip_missing_answers
    if spec.hub is None:
        where = (f"{local} does not exist" if local
                 else f"no data directory is set (--data-dir or {DATA_DIR_ENV})")
        raise DataError(f"{spec.name}: {where}, and it has no Hugging Face source")
    hub = spec.hub
    rows = read_hub_rows(hub.dataset_id, hub.config, hub.split)
    if hub.keep is not None:
        rows = (row for row in rows if hub.keep(row.data))
    return rows, f"{HUB_PREFIX}{hub.dataset_id}", hub.fields, spec.skip_missing_answers


def _validated(rows: Iterable[Row], fields: FieldMap, source: str, skip_invalid: bool,
               skip_missing_answers: bool) -> tuple[list[Problem], int]:
    problems: list[Problem] = []
    first_seen: dict[str, str] = {}
    skipped = 0
    for index, row in enumerate(rows):
        try:
            problem = row_to_problem(row, fields, source, index)
            if problem.id in first_seen:
                raise DataError(f"{row.where}: field {fields.id or 'id'!r} duplicate id "
                                f"{problem.id!r} (first at {first_seen[problem.id]})")
        except MissingAnswerError:
            if not (skip_invalid or skip_missing_answers):
                raise
            skipped += 1
            continue
        except DataError:
            if not skip_invalid:
                raise
            skipped += 1
            continue
        first_seen[problem.id] = row.where
        problems.append(problem)
    return problems, skipped
