"""Reading raw rows (local JSONL/JSON/CSV/parquet, or a Hugging Face dataset) into Problems.

Every row carries where it came from (file and line, or dataset and row index), so a bad row is
one error naming the place and the field: ``math.jsonl:7: field 'answer' is missing``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from mathrl.errors import UserError
from mathrl.types import Problem

USER_FILE_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")


class DataError(UserError):
    """A row or file that cannot become a Problem; the message names file, line and field."""


class MissingAnswerError(DataError):
    """A row with no gold answer (some sources document a few, e.g. MATH's empty \\boxed{})."""


@dataclass(frozen=True)
class Row:
    where: str  # "path:line" or "hub-id[split]:index", for error messages
    data: dict
    error: str | None = None  # a line that could not be parsed: skippable like any bad row


@dataclass(frozen=True)
class FieldMap:
    """Which raw field holds each Problem field (None: the source has no such field).

    ``answer_from`` derives the gold answer from the raw value (e.g. the text after ``####``
    in GSM8K's answer, or the last ``\\boxed{}`` of a MATH solution); it returns None when the
    value holds no answer.
    """

    problem: str = "problem"
    answer: str = "answer"
    id: str | None = "id"
    level: str | None = "level"
    subject: str | None = "subject"
    solution: str | None = "solution"
    tolerance: str | None = None
    answer_from: Callable[[object], str | None] | None = None


def read_file_rows(path: Path) -> Iterator[Row]:
    """Rows of a local file; JSONL is read here (exact line numbers), the rest via ``datasets``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        yield from _jsonl_rows(path)
    elif suffix == ".json":
        yield from _json_rows(path)
    elif suffix in (".csv", ".parquet"):
        import datasets

        table = datasets.load_dataset(suffix[1:], data_files=str(path), split="train")
        first_line = 2 if suffix == ".csv" else 1  # CSV line 1 is the header
        for i, data in enumerate(table):
            yield Row(f"{path}:{i + first_line}" if suffix == ".csv" else f"{path}:row {i}", data)
    else:
        raise DataError(f"{path}: unsupported file type {suffix!r}; use one of {USER_FILE_SUFFIXES}")


def _jsonl_rows(path: Path) -> Iterator[Row]:
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{line_no}"
            try:
                data = json.loads(line)
            except json.JSONDecodeError as err:
                yield Row(where, {}, f"invalid JSON ({err.msg.removesuffix(' at')} at column {err.colno})")
                continue
            if not isinstance(data, dict):
                yield Row(where, {}, f"expected a JSON object, got {type(data).__name__}")
                continue
            yield Row(where, data)


def _json_rows(path: Path) -> Iterator[Row]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(f"{path}:{err.lineno}: invalid JSON ({err.msg} at column {err.colno})") from None
    if not isinstance(data, list) or not all(isinstance(d, dict) for d in data):
        raise DataError(f"{path}: expected a JSON list of objects")
    for i, item in enumerate(data):
        yield Row(f"{path}:item {i}", item)


def read_hub_rows(dataset_id: str, config: str | None, split: str) -> Iterator[Row]:
    """Rows of a Hugging Face dataset (downloaded once, then read from the ``datasets`` cache)."""
    import datasets

    try:
        table = datasets.load_dataset(dataset_id, config, split=split)
    except Exception as err:  # network, auth, missing split: all reported the same way
        raise DataError(f"cannot load Hugging Face dataset {dataset_id!r} "
                        f"(config {config!r}, split {split!r}): {err}") from None
    for i, data in enumerate(table):
        yield Row(f"{dataset_id}[{split}]:{i}", data)


def parse_level(value: object) -> int | None:
    """``3``, ``"3"``, ``"Level 3"`` -> 3; missing or ``"Level ?"`` -> None; anything else raises."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, bool):
        raise ValueError(f"expected a positive integer level, got {value!r}")
    if isinstance(value, int | float):
        if value != int(value) or value < 1:
            raise ValueError(f"expected a positive integer level, got {value!r}")
        return int(value)
    text = str(value).strip()
    if text.lower().startswith("level"):
        text = text[5:].strip()
    if text in ("", "?"):
        return None
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"expected a positive integer level or 'Level N', got {value!r}")
    return int(text)


def row_to_problem(row: Row, fields: FieldMap, source: str, index: int) -> Problem:
    """One validated Problem; raises DataError naming the row's place and the bad field."""
    if row.error is not None:
        raise DataError(f"{row.where}: {row.error}")

    def fail(field: str, message: str, error: type[DataError] = DataError) -> DataError:
        return error(f"{row.where}: field {field!r} {message}")

    def text(field: str | None, required: bool = False,
             error: type[DataError] = DataError) -> str | None:
        if field is None:
            return None
        value = row.data.get(field)
        if isinstance(value, list):  # e.g. OlympiadBench's final_answer: ["$3$"]
            value = value[0] if value else None
        if value is None or (isinstance(value, float) and math.isnan(value)) or str(value).strip() == "":
            if required:
                raise fail(field, "is missing or empty", error)
            return None
        return value if isinstance(value, str) else str(value)

    problem = text(fields.problem, required=True)
    if fields.answer_from is not None:
        raw = row.data.get(fields.answer)
        answer = fields.answer_from(raw) if raw is not None else None
        if answer is None or not answer.strip():
            raise fail(fields.answer, "holds no final answer", MissingAnswerError)
    else:
        answer = text(fields.answer, required=True, error=MissingAnswerError)
    try:
        level = parse_level(row.data.get(fields.level)) if fields.level else None
    except ValueError as err:
        raise fail(fields.level, str(err)) from None
    tolerance = None
    if fields.tolerance and (raw_tol := text(fields.tolerance)) is not None:
        try:
            tolerance = float(raw_tol)
        except ValueError:
            raise fail(fields.tolerance, f"expected a number, got {raw_tol!r}") from None
    return Problem(
        id=text(fields.id) or f"{source}-{index:06d}",
        problem=problem,
        answer=answer.strip(),
        level=level,
        subject=text(fields.subject),
        source=source,
        solution=text(fields.solution),
        tolerance=tolerance,
    )
