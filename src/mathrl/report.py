"""``mathrl report``: the ablation table, recomputed from run folders, with paired tests.

A run folder is anything ``mathrl eval``, ``mathrl sft`` or ``mathrl grpo`` wrote: its
``eval/<benchmark>/samples.jsonl`` are read (never a live loop) and every number is recomputed
from them. Rows are runs, columns benchmarks, cells ``acc% ± CI``. Each run is compared with the
baseline on the problems both answered: exact McNemar for one sample per problem, a paired
bootstrap for more; Holm's correction runs across the whole table. Runs whose problem sets or
protocols (n, temperature, max tokens, few-shot, ...) differ from the baseline's are flagged,
not silently compared.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path

from mathrl.errors import UserError
from mathrl.eval.metrics import summarize
from mathrl.eval.paired import holm, mcnemar_exact, paired_bootstrap
from mathrl.fileio import complete_lines

# What a samples.jsonl line needs for the report (mathrl eval writes these and more).
SAMPLE_FIELDS = ("problem_id", "correct", "answer_key", "n_tokens", "n_thinking_tokens", "finish_reason")
PROTOCOL_KEYS = ("n", "temperature", "top_p", "max_tokens", "few_shot", "thinking", "system_prompt", "suffix")


@dataclass(frozen=True)
class RunEval:
    """One run's results on one benchmark, recomputed from its samples."""

    run: str
    benchmark: str
    by_problem: dict[str, list[dict]]
    metrics: dict
    protocol: dict


@dataclass(frozen=True)
class Comparison:
    run: str
    benchmark: str
    test: str  # "mcnemar" or "bootstrap"
    common: int  # problems both runs answered
    diff: float  # paired accuracy difference, run - baseline
    ci: tuple[float, float]
    p: float
    p_holm: float = 1.0
    flags: tuple[str, ...] = ()


def load_run(run_dir: Path) -> dict[str, RunEval]:
    """Every evaluated benchmark of a run folder, by name."""
    root = Path(run_dir) / "eval"
    if not root.is_dir():
        raise UserError(f"{run_dir}: no eval/ folder (evaluate the run with mathrl eval --out {run_dir})")
    results = {}
    for bench_dir in sorted(p for p in root.iterdir() if (p / "samples.jsonl").is_file()):
        by_problem: dict[str, list[dict]] = {}
        for line_no, line in enumerate(complete_lines(bench_dir / "samples.jsonl"), start=1):
            where = f"{bench_dir / 'samples.jsonl'}:{line_no}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise UserError(f"{where}: not JSON ({err})") from None
            missing = [k for k in SAMPLE_FIELDS if k not in row] if isinstance(row, dict) else ["(object)"]
            if missing:
                raise UserError(f"{where}: field {missing[0]!r} missing (not a mathrl eval sample line)")
            by_problem.setdefault(row["problem_id"], []).append(row)
        stored = bench_dir / "metrics.json"
        protocol = json.loads(stored.read_text()).get("protocol", {}) if stored.is_file() else {}
        results[bench_dir.name] = RunEval(
            Path(run_dir).name, bench_dir.name, by_problem, summarize(list(by_problem.values())), protocol
        )
    if not results:
        raise UserError(f"{run_dir}: no eval/<benchmark>/samples.jsonl found")
    return results


def load_runs(run_dirs: list[Path]) -> dict[str, dict[str, RunEval]]:
    """Every run folder's results by run name (the folder's name), in the order given."""
    if not run_dirs:
        raise UserError("name at least one run folder")
    names = [Path(d).name for d in run_dirs]
    if len(set(names)) != len(names):
        raise UserError(f"run folders must have distinct names, got {names}")
    return {Path(d).name: load_run(Path(d)) for d in run_dirs}


def compare(base: RunEval, other: RunEval, seed: int = 0) -> Comparison:
    """``other`` against ``base`` on their common problems."""
    common = sorted(set(base.by_problem) & set(other.by_problem))
    flags = []
    if set(base.by_problem) != set(other.by_problem):
        flags.append(f"problem sets differ ({len(common)} in common)")
    changed = [k for k in PROTOCOL_KEYS if base.protocol.get(k) != other.protocol.get(k)]
    if changed:
        flags.append("protocol differs: " + ", ".join(changed))
    if not common:
        return Comparison(
            other.run, other.benchmark, "-", 0, math.nan, (math.nan, math.nan), 1.0, flags=tuple(flags)
        )

    def acc(rows):
        return sum(r["correct"] for r in rows) / len(rows)

    a = [acc(base.by_problem[p]) for p in common]
    b = [acc(other.by_problem[p]) for p in common]
    single = all(len(base.by_problem[p]) == 1 == len(other.by_problem[p]) for p in common)
    if single:
        only_a = sum(x == 1 and y == 0 for x, y in zip(a, b, strict=True))
        only_b = sum(x == 0 and y == 1 for x, y in zip(a, b, strict=True))
        n = len(common)
        diff = (only_b - only_a) / n
        # Standard error of a paired difference of proportions.
        se = math.sqrt(max(0.0, only_a + only_b - (only_b - only_a) ** 2 / n)) / n
        return Comparison(
            other.run,
            other.benchmark,
            "mcnemar",
            n,
            diff,
            (diff - 1.96 * se, diff + 1.96 * se),
            mcnemar_exact(only_a, only_b),
            flags=tuple(flags),
        )
    diff, ci, p = paired_bootstrap(a, b, seed=seed)
    return Comparison(other.run, other.benchmark, "bootstrap", len(common), diff, ci, p, flags=tuple(flags))


def build_report(
    run_dirs: list[Path], baseline: str | None = None
) -> tuple[list[str], dict, list[Comparison]]:
    """(run names, results[run][benchmark], comparisons with Holm-adjusted p-values)."""
    results = load_runs(run_dirs)
    names = list(results)
    base = baseline or names[0]
    if base not in results:
        raise UserError(f"--baseline {base!r} is not one of the runs: {', '.join(names)}")
    comparisons = [
        compare(results[base][b], results[r][b])
        for r in names
        if r != base
        for b in results[r]
        if b in results[base]
    ]
    adjusted = holm([c.p for c in comparisons])
    comparisons = [
        Comparison(**{**c.__dict__, "p_holm": q}) for c, q in zip(comparisons, adjusted, strict=True)
    ]
    return names, results, comparisons


def benchmarks_of(results: dict) -> list[str]:
    return sorted({b for run in results.values() for b in run})


def render_markdown(
    names: list[str],
    results: dict,
    comparisons: list[Comparison],
    baseline: str,
    alpha: float = 0.05,
    figures: dict[str, str] | None = None,
) -> str:
    """The report; ``figures`` (caption -> image file beside report.md) are linked at the end."""
    benches = benchmarks_of(results)
    best = {
        b: max((results[r][b].metrics["accuracy"] for r in names if b in results[r]), default=None)
        for b in benches
    }
    by_key = {(c.run, c.benchmark): c for c in comparisons}
    lines = [
        "# Ablation report",
        "",
        f"Baseline: **{baseline}**. Cells: accuracy % ± 95% CI (normal), "
        f"problems x samples. `*`: the paired difference to the baseline survives Holm's correction "
        f"at {alpha} across the table; `†`: not comparable as is (see notes).",
        "",
        "| run | " + " | ".join(benches) + " |",
        "|---|" + "---:|" * len(benches),
    ]
    notes = []
    for r in names:
        cells = []
        for b in benches:
            if b not in results[r]:
                cells.append("-")
                continue
            m = results[r][b].metrics
            text = f"{100 * m['accuracy']:.1f} ± {100 * m['ci95_normal']:.1f} ({m['problems']}x{m['n']})"
            if best[b] is not None and m["accuracy"] == best[b]:
                text = f"**{text}**"
            c = by_key.get((r, b))
            if c is not None and c.p_holm <= alpha and not c.flags:
                text += " *"
            if c is not None and c.flags:
                text += " †"
                notes.append(f"- {r} / {b}: " + "; ".join(c.flags))
            cells.append(text)
        lines.append(f"| {r} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Paired tests against the baseline",
        "",
        "| run | benchmark | test | problems | difference (pts) | 95% CI | p | p (Holm) |",
        "|---|---|---|---:|---:|---|---:|---:|",
    ]
    for c in comparisons:
        lines.append(
            f"| {c.run} | {c.benchmark} | {c.test} | {c.common} | {100 * c.diff:+.1f} | "
            f"[{100 * c.ci[0]:+.1f}, {100 * c.ci[1]:+.1f}] | {c.p:.4g} | {c.p_holm:.4g} |"
        )
    lines += [
        "",
        "## Tokens and efficiency",
        "",
        "| run | benchmark | accuracy % | mean tokens | median | p90 | thinking tokens | efficiency |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in names:
        for b in benches:
            if b in results[r]:
                m = results[r][b].metrics
                lines.append(
                    f"| {r} | {b} | {100 * m['accuracy']:.1f} | {m['mean_tokens']:.1f} | "
                    f"{m['median_tokens']:.0f} | {m['p90_tokens']:.0f} | {m['mean_thinking_tokens']:.1f} | "
                    f"{m['efficiency']:.3f} |"
                )
    if notes:
        lines += ["", "## Notes", "", *notes]
    if figures:
        lines += ["", "## Plots", ""]
        for caption, name in figures.items():
            lines += [f"![{caption}]({name})", ""]
        lines.pop()
    return "\n".join(lines) + "\n"


def report_rows(names: list[str], results: dict, comparisons: list[Comparison]) -> list[dict]:
    """One flat record per (run, benchmark): the numbers of the table and of its comparison with
    the baseline (``None`` where there is none). ``report.csv`` and ``--json`` are these rows."""
    by_key = {(c.run, c.benchmark): c for c in comparisons}
    rows = []
    for r in names:
        for b in benchmarks_of(results):
            if b not in results[r]:
                continue
            m = results[r][b].metrics
            c = by_key.get((r, b))
            rows.append({
                "run": r, "benchmark": b, "problems": m["problems"], "n": m["n"],
                "accuracy": m["accuracy"], "ci95": m["ci95_normal"],
                "mean_tokens": m["mean_tokens"], "median_tokens": m["median_tokens"],
                "p90_tokens": m["p90_tokens"], "mean_thinking_tokens": m["mean_thinking_tokens"],
                "efficiency": m["efficiency"], "test": c.test if c else None,
                "diff_vs_baseline": c.diff if c else None, "diff_ci_low": c.ci[0] if c else None,
                "diff_ci_high": c.ci[1] if c else None, "p": c.p if c else None,
                "p_holm": c.p_holm if c else None, "flags": "; ".join(c.flags) if c else None,
            })
    return rows


def render_csv(names: list[str], results: dict, comparisons: list[Comparison]) -> str:
    rows = report_rows(names, results, comparisons)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]) if rows else ["run", "benchmark"])
    writer.writeheader()
    writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)
    return out.getvalue()
