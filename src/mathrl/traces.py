"""Chat-format training data (SFT traces): one JSON object per line,
``{"messages": [{"role", "content"}, ...], "metadata": {...}}``.

``mathrl distill`` and ``mathrl rejection-sample`` write it, ``mathrl traces`` merges and
filters it, ``mathrl sft`` trains on it. Metadata written by mathrl: ``problem_id``,
``dataset``, ``source`` (teacher or policy model), ``tokens`` (completion tokens),
``sample_index``; files from elsewhere may carry other metadata or none.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mathrl.data.rows import DataError, read_file_rows

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Trace:
    messages: tuple[dict[str, str], ...]
    metadata: dict = field(default_factory=dict)

    @property
    def tokens(self) -> int | None:
        value = self.metadata.get("tokens")
        return value if isinstance(value, int) else None

    @property
    def problem_key(self) -> tuple[str, str] | None:
        pid = self.metadata.get("problem_id")
        return (str(self.metadata.get("dataset", "")), str(pid)) if pid is not None else None

    def to_json(self) -> str:
        return json.dumps({"messages": list(self.messages), "metadata": self.metadata}, ensure_ascii=False)


def read_traces(path: str | Path) -> list[Trace]:
    """Every trace of a chat JSONL file; a bad line is one error naming file, line and field."""
    path = Path(path)
    if path.suffix.lower() != ".jsonl":
        raise DataError(f"{path}: chat data is read from .jsonl files")
    traces = []
    for row in read_file_rows(path):
        if row.error:
            raise DataError(f"{row.where}: {row.error}")
        traces.append(parse_trace(row.data, row.where))
    return traces


def parse_trace(data: dict, where: str) -> Trace:
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        raise DataError(f"{where}: field 'messages' must be a non-empty list of chat messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise DataError(f"{where}: field 'messages[{i}]' must be an object with role and content")
        if message.get("role") not in ROLES:
            raise DataError(
                f"{where}: field 'messages[{i}].role' must be one of {', '.join(ROLES)}, "
                f"got {message.get('role')!r}"
            )
        if not isinstance(message.get("content"), str):
            raise DataError(f"{where}: field 'messages[{i}].content' must be a string")
    if not any(m["role"] == "assistant" for m in messages):
        raise DataError(f"{where}: field 'messages' has no assistant turn to train on")
    metadata = data.get("metadata", {})
    if not isinstance(metadata, dict):
        raise DataError(f"{where}: field 'metadata' must be an object")
    return Trace(tuple({"role": m["role"], "content": m["content"]} for m in messages), metadata)


def filter_traces(
    traces: Sequence[Trace],
    *,
    max_tokens: int | None = None,
    min_tokens: int | None = None,
    datasets: Iterable[str] | None = None,
    one_per_problem: str | None = None,
) -> list[Trace]:
    """Traces kept by length (metadata ``tokens``) and dataset; ``one_per_problem`` = ``"shortest"``
    or ``"first"`` keeps one trace per (dataset, problem id). Order is kept."""
    wanted = set(datasets) if datasets is not None else None
    kept = []
    for t in traces:
        tokens = t.tokens
        if max_tokens is not None and (tokens is None or tokens > max_tokens):
            continue
        if min_tokens is not None and (tokens is None or tokens < min_tokens):
            continue
        if wanted is not None and t.metadata.get("dataset") not in wanted:
            continue
        kept.append(t)
    if one_per_problem is None:
        return kept
    if one_per_problem not in ("shortest", "first"):
        raise ValueError(f"one_per_problem must be 'shortest' or 'first', got {one_per_problem!r}")
    best: dict[tuple[str, str], int] = {}
    for i, t in enumerate(kept):
        key = t.problem_key
        if key is None:
            continue
        if key not in best or (
            one_per_problem == "shortest" and (t.tokens or 0) < (kept[best[key]].tokens or 0)
        ):
            best[key] = i
    chosen = set(best.values())
    return [t for i, t in enumerate(kept) if t.problem_key is None or i in chosen]


def trace_stats(traces: Sequence[Trace]) -> dict:
    """Counts and token lengths, overall and per dataset."""
    from mathrl.eval.metrics import percentile

    tokens = sorted(t.tokens for t in traces if t.tokens is not None)
    by_dataset: dict[str, int] = {}
    for t in traces:
        name = str(t.metadata.get("dataset", "?"))
        by_dataset[name] = by_dataset.get(name, 0) + 1
    problems = {t.problem_key for t in traces if t.problem_key is not None}
    return {
        "traces": len(traces),
        "problems": len(problems),
        "by_dataset": by_dataset,
        "mean_tokens": sum(tokens) / len(tokens) if tokens else None,
        "median_tokens": percentile(tokens, 50) if tokens else None,
        "p90_tokens": percentile(tokens, 90) if tokens else None,
    }
