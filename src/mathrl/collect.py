"""Sampling SFT traces and keeping the correct ones: ``mathrl distill`` (a teacher, keep every
correct finished sample) and ``mathrl rejection-sample`` (the policy itself, keep the shortest
correct sample per problem). Both grade with the one grader.

Resumable: problems go in seeded chunks (as in ``mathrl eval``); after each chunk the kept
traces are appended to ``OUT`` and then one line per problem to ``OUT.progress.jsonl`` (sample
lengths, which were correct, which were kept). A rerun drops traces of problems the progress
file does not list (a kill between the two writes) and samples only what is left, so the
output equals an uninterrupted run's.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from mathrl.config import describe_changes
from mathrl.errors import UserError
from mathrl.fileio import append_lines, complete_lines, write_atomic
from mathrl.grading import Grader
from mathrl.prompts import PromptProtocol
from mathrl.sampling import Sampler, SamplingParams
from mathrl.sampling.chunked import sample_chunks
from mathrl.traces import Trace
from mathrl.types import Completion, Problem


@dataclass(frozen=True)
class CollectConfig:
    """What determines the samples, and so what a resumed run must share with the first: the
    model (name, or name + adapter), the data and the sampling settings; not where a server
    listens (``endpoint``, recorded but free to change, as a teacher server restarted elsewhere)."""

    source: str  # the teacher or policy model, recorded in every trace's metadata
    dataset: str
    n: int = 1
    keep: Literal["all", "shortest"] = "all"
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 2048
    seed: int = 0
    # The prompt (a few-shot example is shown when sampling, not saved in the traces).
    prompt: PromptProtocol = field(default_factory=PromptProtocol)
    chunk_size: int = 32


def progress_path(out: Path) -> Path:
    return out.with_name(out.name + ".progress.jsonl")


def select_correct(completions: Sequence[Completion], correct: Sequence[bool], keep: str) -> list[int]:
    """Indices of the samples to keep: correct and finished (a truncated trace would teach the
    model to stop mid-answer); ``shortest`` keeps the one with fewest tokens (first on ties).

    >>> select_correct([c8, c5, c6], [True, False, True], "shortest")  # doctest: +SKIP
    [2]
    """
    good = [i for i, c in enumerate(completions) if correct[i] and c.finish_reason == "stop"]
    if keep == "shortest" and good:
        return [min(good, key=lambda i: (completions[i].n_tokens, i))]
    return good


def collect_traces(sampler: Sampler, problems: Sequence[Problem], extract: str, cfg: CollectConfig,
                   out: Path, on_progress: Callable[[int, int], None] | None = None,
                   endpoint: str | None = None, grader: Grader | None = None) -> dict:
    """Sample, grade and keep traces for ``problems`` into ``out``, resuming what is there.
    ``endpoint`` (the server's URL, if any) is recorded, not compared."""
    out = Path(out)
    grader = grader or Grader(extract)
    done = _resume(out, cfg, endpoint)
    params = SamplingParams(temperature=cfg.temperature, top_p=cfg.top_p, max_tokens=cfg.max_tokens,
                            enable_thinking=cfg.prompt.thinking)
    prompt_of = lambda p: cfg.prompt.messages(p, cfg.dataset)  # noqa: E731
    if on_progress:
        on_progress(sum(p.id in done for p in problems), len(problems))
    for pairs, _ in sample_chunks(sampler, problems, prompt_of, cfg.n, params, cfg.seed, cfg.dataset,
                                  cfg.chunk_size, done):
        traces, records = [], []
        graded_P = grader.grade_groups([p for p, _ in pairs], [c for _, c in pairs], extract=extract)
        for (problem, completions), graded in zip(pairs, graded_P, strict=True):
            correct = [g.correct for g in graded]
            kept = select_correct(completions, correct, cfg.keep)
            for i in kept:
                c = completions[i]
                traces.append(Trace(
                    tuple(cfg.prompt.messages(problem, cfg.dataset, answer=c.text, few_shot=False)),
                    {"problem_id": problem.id, "dataset": cfg.dataset, "source": cfg.source,
                     "tokens": c.n_tokens, "thinking_tokens": c.n_thinking_tokens, "sample_index": i,
                     "level": problem.level}).to_json())
            record = {"problem_id": problem.id, "tokens": [c.n_tokens for c in completions],
                      "correct": correct, "finished": [c.finish_reason == "stop" for c in completions],
                      "kept": kept}
            records.append(json.dumps(record))
            done[problem.id] = record
        append_lines(out, traces)  # traces first: a kill before the progress line redoes them
        append_lines(progress_path(out), records)
        if on_progress:
            on_progress(sum(p.id in done for p in problems), len(problems))
    return collect_stats([done[p.id] for p in problems if p.id in done])


def _resume(out: Path, cfg: CollectConfig, endpoint: str | None = None) -> dict[str, dict]:
    """Problems already processed (from the progress file), after repairing ``out``."""
    progress = progress_path(out)
    settings = json.loads(json.dumps(asdict(cfg)))
    lines = complete_lines(progress)
    header = json.dumps({"settings": settings, "endpoint": endpoint})
    if not lines:
        if out.exists() and out.stat().st_size:
            raise UserError(f"{out} exists but has no {progress.name}: it was not written by this "
                            "command (or its progress file was removed); choose another --out")
        out.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(out, "")
        write_atomic(progress, header + "\n")
        return {}
    changed = describe_changes(json.loads(lines[0])["settings"], settings)
    if changed:
        raise UserError(f"{out} was collected with other settings ({changed}); rerun with "
                        "the same arguments to resume, or choose another --out")
    done = {r["problem_id"]: r for r in map(json.loads, lines[1:])}
    kept = [line for line in complete_lines(out) if json.loads(line)["metadata"]["problem_id"] in done]
    write_atomic(out, "".join(line + "\n" for line in kept))
    # The header records where the samples come from now (a moved server is no other setting).
    write_atomic(progress, "".join(line + "\n" for line in [header, *lines[1:]]))
    return done


def collect_stats(records: Sequence[dict]) -> dict:
    """Yield and lengths: ``sample_yield`` = correct finished samples / samples, ``problem_yield`` =
    problems with a kept trace / problems, and mean tokens of all samples vs the kept ones."""
    from mathrl.eval.metrics import percentile

    all_tokens = [t for r in records for t in r["tokens"]]
    kept_tokens = [r["tokens"][i] for r in records for i in r["kept"]]
    good = sum(c and f for r in records for c, f in zip(r["correct"], r["finished"], strict=True))
    mean_all = sum(all_tokens) / len(all_tokens) if all_tokens else 0.0
    mean_kept = sum(kept_tokens) / len(kept_tokens) if kept_tokens else 0.0
    return {
        "problems": len(records), "samples": len(all_tokens), "correct_samples": good,
        "sample_yield": good / len(all_tokens) if all_tokens else 0.0,
        "problems_with_correct": sum(bool(r["kept"]) for r in records),
        "problem_yield": sum(bool(r["kept"]) for r in records) / len(records) if records else 0.0,
        "traces": len(kept_tokens), "mean_sample_tokens": mean_all, "mean_kept_tokens": mean_kept,
        "median_kept_tokens": percentile(kept_tokens, 50),
        "token_reduction": 1 - mean_kept / mean_all if mean_all and kept_tokens else 0.0,
    }
