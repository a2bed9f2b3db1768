"""``mathrl eval``: sample a model on benchmarks, grade every sample, write resumable run folders.

Layout of ``OUT``::

    config.yaml                     the evaluation's settings (a rerun must match them)
    metrics.jsonl                   one line per finished benchmark, keys eval/<name>/<metric>
    eval/<benchmark>/samples.jsonl  every completion, graded, one line each
    eval/<benchmark>/metrics.json   accuracy with CIs, pass@k, maj@k, token statistics

Resuming: problems are processed in fixed chunks, each sampled with a seed derived from the run
seed and the chunk's index, and each chunk's lines are appended in one write and fsynced. A
rerun skips chunks already on disk (a torn last line from a kill is dropped) and samples the
rest exactly as an uninterrupted run would, so the final files match it: nothing lost, nothing
doubled.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import yaml

from mathrl.config import describe_changes
from mathrl.data import load_dataset
from mathrl.errors import UserError
from mathrl.eval.config import EvalConfig
from mathrl.eval.metrics import closed_thinking_tokens, summarize
from mathrl.fileio import append_lines, complete_lines, write_atomic
from mathrl.grading import Grader
from mathrl.grading.normalize import compact, normalize
from mathrl.models import local_tokenizer
from mathrl.sampling import Sampler, SamplingParams
from mathrl.sampling.chunked import sample_chunks
from mathrl.train.sink import MetricsSink
from mathrl.types import Problem
from mathrl.watchdog import phase


def check_config(out_dir: Path, cfg: EvalConfig) -> None:
    """Record ``cfg`` in ``out_dir``; a rerun into the same folder must use the same settings."""
    path = out_dir / "config.yaml"
    wanted = json.loads(json.dumps(asdict(cfg)))
    if path.is_file():
        existing = yaml.safe_load(path.read_text()) or {}
        changed = describe_changes(existing, wanted)
        if changed:
            raise UserError(f"{out_dir} holds an evaluation with other settings ({changed}); "
                            "rerun with the same arguments to resume, or use another --out")
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(path, yaml.safe_dump(wanted, sort_keys=False))


def read_samples(path: Path, n: int) -> dict[str, list[dict]]:
    """Samples on disk by problem id, keeping only complete groups of ``n``.

    Anything else (a line cut short by a kill, a group missing samples) is dropped and the file
    rewritten without it, so those problems are sampled again and never appear twice.
    """
    if not path.is_file():
        return {}
    lines = complete_lines(path)
    groups: dict[str, list[dict]] = {}
    for line in lines:
        row = json.loads(line)
        groups.setdefault(row["problem_id"], []).append(row)
    kept = {pid: rows for pid, rows in groups.items() if len(rows) == n}
    if path.stat().st_size != sum(len(line.encode()) + 1 for line in lines) or len(kept) < len(groups):
        write_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n"
                                   for rows in kept.values() for r in rows))
    return kept


def sample_rows(problem: Problem, benchmark: str, completions, graded,
                count_tokens: Callable[[str], int] | None = None) -> list[dict]:
    rows = []
    for index, (c, g) in enumerate(zip(completions, graded, strict=True)):
        rows.append({
            "benchmark": benchmark, "problem_id": problem.id, "sample_index": index,
            "problem": problem.problem, "gold": problem.answer, "level": problem.level,
            "subject": problem.subject, "response": c.text, "extracted": g.extracted,
            "correct": g.correct, "timed_out": g.timed_out,
            "answer_key": compact(normalize(g.extracted)) if g.extracted is not None else None,
            "finish_reason": c.finish_reason, "n_tokens": c.n_tokens,
            "n_thinking_tokens": c.n_thinking_tokens,
            "n_thinking_tokens_closed": (closed_thinking_tokens(c.text, count_tokens)
                                         if count_tokens else None),
        })
    return rows


def evaluate_benchmark(sampler: Sampler, cfg: EvalConfig, benchmark: str, out_dir: Path,
                       data_dir: str | None = None,
                       on_progress: Callable[[int, int], None] | None = None,
                       grader: Grader | None = None) -> dict:
    """Evaluate one benchmark into ``out_dir/eval/<benchmark>/``, resuming what is there."""
    grader = grader or Grader()
    dataset = load_dataset(benchmark, data_dir, num_problems=cfg.num_problems, seed=cfg.seed,
                           shuffle_seed=cfg.shuffle_seed)
    bench_dir = out_dir / "eval" / benchmark
    bench_dir.mkdir(parents=True, exist_ok=True)
    samples_path = bench_dir / "samples.jsonl"
    done = read_samples(samples_path, cfg.n)
    problems = list(dataset.problems)
    params = SamplingParams(temperature=cfg.temperature, top_p=cfg.top_p, max_tokens=cfg.max_tokens,
                            enable_thinking=cfg.prompt.thinking)
    new_tokens, sampling_s = 0, 0.0
    tokenizer = getattr(sampler, "tokenizer", None) or local_tokenizer(cfg.model)
    count_tokens = (lambda text: len(tokenizer.encode(text, add_special_tokens=False))) if tokenizer else None
    finished = sum(p.id in done for p in problems)
    if on_progress:
        on_progress(finished, len(problems))
    prompt_of = lambda p: cfg.prompt.messages(p, benchmark)  # noqa: E731
    for pairs, seconds in sample_chunks(sampler, problems, prompt_of, cfg.n, params, cfg.seed, benchmark,
                                        cfg.chunk_size, done):
        sampling_s += seconds
        lines = []
        with phase("grading"):
            graded_P = grader.grade_groups([p for p, _ in pairs], [c for _, c in pairs],
                                           extract=dataset.extract)
        for (problem, completions), graded in zip(pairs, graded_P, strict=True):
            rows = sample_rows(problem, benchmark, completions, graded, count_tokens)
            new_tokens += sum(r["n_tokens"] for r in rows)
            done[problem.id] = rows
            lines += [json.dumps(r, ensure_ascii=False) for r in rows]
        append_lines(samples_path, lines)
        if on_progress:
            on_progress(sum(p.id in done for p in problems), len(problems))
    metrics = summarize([done[p.id] for p in problems])
    metrics.update(benchmark=benchmark, source=dataset.origin, protocol=protocol(cfg),
                   timing={"sampling_seconds": round(sampling_s, 3), "new_tokens": new_tokens,
                           "tokens_per_second": new_tokens / sampling_s if sampling_s else None})
    write_atomic(bench_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    return metrics


def evaluate(sampler: Sampler, cfg: EvalConfig, out_dir: Path, data_dir: str | None = None,
             progress: Callable[[str], Callable[[int, int], None]] | None = None,
             grader: Grader | None = None) -> dict[str, dict]:
    """Evaluate every benchmark of ``cfg``; returns metrics by benchmark."""
    out_dir = Path(out_dir)
    check_config(out_dir, cfg)
    results = {}
    for benchmark in cfg.benchmarks:
        results[benchmark] = evaluate_benchmark(sampler, cfg, benchmark, out_dir, data_dir,
                                                progress(benchmark) if progress else None, grader)
        log_metrics(out_dir, {f"eval/{benchmark}/{k}": v for k, v in results[benchmark].items()
                              if isinstance(v, int | float) and not isinstance(v, bool)})
    return results


def protocol(cfg: EvalConfig) -> dict:
    """The settings that make two evaluations comparable (reports flag runs that differ)."""
    return {"n": cfg.n, "temperature": cfg.temperature, "top_p": cfg.top_p, "max_tokens": cfg.max_tokens,
            **cfg.prompt.record(), "num_problems": cfg.num_problems, "seed": cfg.seed,
            "shuffle_seed": cfg.shuffle_seed}


def log_metrics(out_dir: Path, values: dict, step: int | None = None) -> None:
    """Append one line to the run's one metrics sink, ``metrics.jsonl``."""
    MetricsSink(out_dir).log(values, step=step)


def summary_table(results: dict[str, dict]) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    """Console table header and rows; pass@n only when some benchmark has n > 1 (else it equals
    accuracy). The Wilson interval and maj@k stay in metrics.json."""
    with_pass = any(m["n"] > 1 for m in results.values())
    header = ("benchmark", "problems", "acc % ± CI", *(("pass@n",) if with_pass else ()),
              "tokens", "think", "eff.", "trunc.")
    rows = []
    for name, m in results.items():
        n = m["n"]
        pass_n = (f"{100 * m['pass_at_k'].get(str(n), m['accuracy']):.1f}",) if with_pass else ()
        rows.append((
            name, f"{m['problems']}x{n}",
            f"{100 * m['accuracy']:.1f} ± {100 * m['ci95_normal']:.1f}", *pass_n,
            f"{m['mean_tokens']:.0f}/{m['median_tokens']:.0f}/{m['p90_tokens']:.0f}",
            f"{m['mean_thinking_tokens']:.0f} ({100 * m['thinking_share']:.0f}%)",
            f"{m['efficiency']:.3f}", f"{100 * m['truncation_rate']:.0f}%"))
    return header, rows
