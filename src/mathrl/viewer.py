"""``mathrl view``: one self-contained HTML page to browse the graded samples of run folders.

The page embeds the samples as JSON and renders them with a few lines of plain JavaScript (no
network, no external scripts): problem, response with its thinking folded, extracted answer, gold,
correct; filters by benchmark, run, correctness and text; a compare view that puts two runs side
by side on the same problems. The filter state lives in the URL fragment
(``#view=compare&a=base&b=rl&bench=arith&diff=b_only``), so a view can be bookmarked or shared.
"""

from __future__ import annotations

import json
from importlib.resources import files

from mathrl.grading import split_thinking
from mathrl.report import RunEval


def page_data(results: dict[str, dict[str, RunEval]]) -> dict:
    """What the page shows, from ``report.load_runs``: runs, benchmarks, problems (stored once)
    and samples (compact rows)."""
    problems, samples = {}, []
    for run_index, by_bench in enumerate(results.values()):
        for bench, result in by_bench.items():
            for pid, rows in result.by_problem.items():
                first = rows[0]
                problems.setdefault(bench, {}).setdefault(
                    pid, {"problem": first.get("problem", ""), "gold": first.get("gold", ""),
                          "level": first.get("level")})
                for row in rows:
                    thinking, rest = split_thinking(row.get("response", ""))
                    samples.append({
                        "run": run_index, "bench": bench, "pid": pid, "i": row.get("sample_index", 0),
                        "thinking": thinking, "answer": rest, "extracted": row.get("extracted"),
                        "correct": bool(row["correct"]), "tokens": row.get("n_tokens"),
                        "thinking_tokens": row.get("n_thinking_tokens"),
                        "finish": row.get("finish_reason"),
                    })
    return {"runs": list(results), "benchmarks": sorted(problems), "problems": problems, "samples": samples}


def render_page(data: dict, title: str = "mathrl samples") -> str:
    template = files("mathrl").joinpath("viewer.html").read_text(encoding="utf-8")
    # "<" escaped inside the JSON: no response text can close the <script> element it sits in.
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":")).replace("<", "\\u003c")
    title = title.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return template.replace("__TITLE__", title).replace("__DATA__", payload)
