"""``mathrl demo``: both studies in miniature on the embedded tiny model and arith.

The demo is a list of stages, each one ``mathrl`` command line, printed before it runs (so every
step can be copied and rerun by hand) and run in this process through the CLI's own ``main``.
Study 1 (math reasoning post-training): baseline eval; a stronger teacher (``tiny-teacher``)
served over HTTP by ``mathrl serve``, distilled into traces; LoRA SFT on them; direct GRPO;
SFT -> GRPO; GRPO on hard problems only; continued GRPO at half the learning rate. Study 2
(token-efficient reasoning): a verbose baseline; rejection-sampled SFT (the shortest correct of
16 samples); online RL with the self-improving efficiency reward. Then one report per study
(table with CIs, paired tests against the study's baseline, plots, the sample viewer).

Every stage writes a run folder under ``out``; a finished stage is recorded in
``out/demo_state.json`` with its command line, so a killed demo reruns only what is missing
(and each command resumes its own partial work).
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from mathrl.config import PACKAGED_RECIPES
from mathrl.errors import UserError
from mathrl.fileio import write_atomic
from mathrl.processes import stop

TEACHER_URL = "{teacher_url}"  # filled in once the teacher's server is up
BASELINES = {1: "base", 2: "verbose"}  # each study's runs are compared with its own baseline


@dataclass(frozen=True)
class Scale:
    """How big each stage is. ``FULL`` is the demo (<= 15 minutes on 2 CPU cores); ``QUICK``
    runs every stage for a few steps (the test of the whole pipeline)."""

    eval_problems: int  # arith test problems per evaluation (300 is the whole test split)
    distill_problems: int
    sft_epochs: int
    grpo_steps: int  # direct GRPO and GRPO on hard problems
    followup_steps: int  # SFT -> GRPO and continued GRPO
    verbose_problems: int
    rs_problems: int
    rs_samples: int
    efficiency_steps: int


FULL = Scale(eval_problems=300, distill_problems=2000, sft_epochs=4, grpo_steps=60, followup_steps=30,
             verbose_problems=2000, rs_problems=300, rs_samples=16, efficiency_steps=60)
QUICK = Scale(eval_problems=40, distill_problems=96, sft_epochs=1, grpo_steps=2, followup_steps=1,
              verbose_problems=96, rs_problems=24, rs_samples=4, efficiency_steps=2)


@dataclass(frozen=True)
class Stage:
    name: str  # its run folder (or file) under the demo folder
    study: int  # 1: math reasoning post-training, 2: token-efficient reasoning
    title: str
    argv: tuple[str, ...]  # a mathrl command line
    label: str = ""  # its row in the closing table (runs only)


def stages(out: Path, scale: Scale, recipes: Path = PACKAGED_RECIPES / "tiny") -> list[Stage]:
    """The demo's command lines, in order."""
    o, tiny = shlex.quote(str(out)), shlex.quote(str(recipes))
    n = scale.eval_problems
    evals = f"eval.num_problems={n}"
    every = f"eval.every={max(1, scale.grpo_steps // 3)}"
    eval_args = f"--benchmarks arith --max-tokens 256 --num-problems {n}"
    rows = [  # (name, study, what it shows, its row in the closing table, command line)
        ("base", 1, "baseline: the shipped tiny model on arith", "tiny as shipped",
         f"eval --model tiny {eval_args} --out {o}/base"),
        ("teacher", 1, "the teacher (tiny-teacher) on the same problems", "tiny-teacher",
         f"eval --model tiny-teacher {eval_args} --out {o}/teacher"),
        ("traces.jsonl", 1, "distillation: sample the teacher over HTTP, keep its correct traces", "",
         # Concurrent requests (distill's default): mathrl serve batches them, and its sampler's
         # per-row seeds make a prompt's samples the same whatever arrived with it.
         f"distill --teacher {TEACHER_URL} --dataset arith_train --levels 1,2,3 "
         f"--num-problems {scale.distill_problems} --max-tokens 256 --out {o}/traces.jsonl"),
        ("sft", 1, "LoRA SFT on the teacher's traces", "distilled SFT",
         f"sft {tiny}/sft.yaml data={o}/traces.jsonl epochs={scale.sft_epochs} {evals} --out {o}/sft"),
        ("grpo", 1, "GRPO from the base model, binary correctness reward", "GRPO",
         f"grpo {tiny}/grpo.yaml max_steps={scale.grpo_steps} {evals} {every} --out {o}/grpo"),
        ("sft_grpo", 1, "SFT -> GRPO: GRPO from the SFT adapter", "SFT -> GRPO",
         f"grpo {tiny}/sft_grpo.yaml adapter={o}/sft/final max_steps={scale.followup_steps} {evals} "
         f"--out {o}/sft_grpo"),
        ("grpo_hard", 1, "GRPO on hard problems only (levels 2-3)", "GRPO, hard only",
         f"grpo {tiny}/grpo_hard.yaml max_steps={scale.grpo_steps} {evals} {every} --out {o}/grpo_hard"),
        ("grpo_continue", 1, "continued GRPO from the hard run at half the learning rate", "GRPO hard + lr/2",
         f"grpo {tiny}/grpo_continue.yaml adapter={o}/grpo_hard/final max_steps={scale.followup_steps} "
         f"{evals} --out {o}/grpo_continue"),
        ("verbose_traces.jsonl", 2, "study 2's verbose baseline, its data: traces that re-check steps", "",
         f"toy traces --recheck-percent 85 --num-problems {scale.verbose_problems} "
         f"--out {o}/verbose_traces.jsonl"),
        ("verbose", 2, "the verbose baseline: tiny-teacher fine-tuned to re-check its steps",
         "verbose baseline",
         f"sft {tiny}/verbose.yaml data={o}/verbose_traces.jsonl {evals} --out {o}/verbose"),
        ("rs_traces.jsonl", 2, f"rejection sampling: the shortest correct of {scale.rs_samples} samples", "",
         f"rejection-sample --model {o}/verbose/final --dataset arith_train --levels 1,2,3 "
         f"--num-problems {scale.rs_problems} --num-samples {scale.rs_samples} --max-tokens 256 "
         f"--out {o}/rs_traces.jsonl"),
        ("rs_sft", 2, "rejection-sampled SFT (LoRA) on the verbose model", "rejection-sampled SFT",
         f"sft {tiny}/rs_sft.yaml model={o}/verbose/final data={o}/rs_traces.jsonl {evals} --out {o}/rs_sft"),
        ("efficiency_rl", 2, "online RL with the efficiency reward best_so_far / tokens", "efficiency RL",
         f"grpo {tiny}/efficiency_rl.yaml model={o}/verbose/final max_steps={scale.efficiency_steps} {evals} "
         f"--out {o}/efficiency_rl"),
    ]
    for study, baseline in BASELINES.items():
        runs = " ".join(f"{o}/{name}" for name, s, _, label, _ in rows if s == study and label)
        rows.append((f"report/study{study}", study, f"report, study {study}: against {baseline}", "",
                     f"report {runs} --baseline {baseline} --quiet --out {o}/report/study{study}"))
    return [Stage(name, study, title, tuple(shlex.split(command)), label)
            for name, study, title, label, command in rows]


@contextmanager
def teacher_server(log: Callable[[str], None]) -> Iterator[str]:
    """``mathrl serve --model tiny-teacher`` on a free port, in its own process; yields its URL."""
    command = [sys.executable, "-m", "mathrl.cli", "serve", "--model", "tiny-teacher", "--port", "0"]
    log("$ mathrl serve --model tiny-teacher --port 0 &   # in the background; its URL goes to --teacher")
    server = subprocess.Popen(
        [*command, "--exit-with-parent"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        line = server.stdout.readline()
        found = re.search(r"http://[\w.]+:\d+/v1", line)
        if found is None:
            raise UserError(f"the teacher server did not start: {line.strip() or server.stdout.read()}")
        log(f"  teacher at {found[0]}")
        yield found[0]
    finally:
        stop(server, grace_s=10)


def shown(argv) -> str:
    """A command line as the user would type it in the repository (recipes as configs/...)."""
    return "$ mathrl " + shlex.join(a.replace(str(PACKAGED_RECIPES), "configs") for a in argv)


def run_demo(out: Path, scale: Scale = FULL, log: Callable[[str], None] = print) -> None:
    """Run every stage not yet done."""
    from mathrl.cli import main

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    state_path = out / "demo_state.json"
    state = json.loads(state_path.read_text()) if state_path.is_file() else {}
    plan = stages(out, scale)
    for index, stage in enumerate(plan, start=1):
        header = f"[{index}/{len(plan)}] study {stage.study}: {stage.title}"
        if state.get(stage.name) == list(stage.argv):
            log(f"[{index}/{len(plan)}] {stage.name}: done before, skipped")
            continue
        log("")
        log(header)
        start = time.perf_counter()
        if TEACHER_URL in stage.argv:
            with teacher_server(log) as url:
                argv = [url if a == TEACHER_URL else a for a in stage.argv]
                log(shown(argv))
                code = main(argv)
        else:
            log(shown(stage.argv))
            code = main(list(stage.argv))
        if code != 0:
            raise UserError(f"stage {stage.name} failed (exit {code}); fix it and rerun the demo to resume")
        log(f"  {stage.name}: {time.perf_counter() - start:.0f} s")
        state[stage.name] = list(stage.argv)
        write_atomic(state_path, json.dumps(state, indent=1) + "\n")
