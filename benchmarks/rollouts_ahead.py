"""Rollouts sampled one step ahead against the synchronous loop: GRPO on the embedded tiny model
with ``mathrl serve`` as the engine (configs/tiny/grpo.yaml, ``rollout.engine: serve``), the same
run with ``rollout.max_staleness`` 0 and 1, one after the other on this machine.

Printed: steps per second of each (the steps after the first, which cannot overlap anything;
from the run's own ``time/step_s``), their ratio, where each step's time went, the staleness
seen, and the held-out accuracy on arith (300 problems) with its 95% interval:

    python benchmarks/rollouts_ahead.py                 # 40 steps each
    python benchmarks/rollouts_ahead.py --steps 10 --eval-problems 0
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RECIPE = Path(__file__).resolve().parents[1] / "src" / "mathrl" / "configs" / "tiny" / "grpo.yaml"


def run(staleness: int, args, work: Path) -> dict:
    out = work / f"staleness_{staleness}"
    evals = ["eval.benchmarks=[arith]", f"eval.num_problems={args.eval_problems}"] if args.eval_problems \
        else ["eval.benchmarks=[]"]
    command = [sys.executable, "-m", "mathrl.cli", "grpo", str(RECIPE), "--out", str(out),
               f"max_steps={args.steps}", "save_every=0", "rollout.engine=serve",
               f"rollout.max_staleness={staleness}", *evals, *args.set]
    t0 = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode:
        sys.exit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "reward/mean" in r]
    later = steps[1:]
    result = {
        "staleness": staleness,
        "wall_s": wall,
        "steps_per_s": len(later) / sum(r["time/step_s"] for r in later),
        "max_staleness_seen": max(r["rollout/staleness"] for r in steps),
        "dropped_groups": sum(r.get("rollout/dropped_stale", 0) for r in steps),
        "reward_last10": statistics.fmean(r["reward/correct"] for r in steps[-10:]),
        "phases": {k: statistics.fmean(r.get(k, 0.0) for r in later)
                   for k in ("time/rollout_wait_s", "time/sampling_s", "time/grading_s",
                             "time/training_s", "time/publish_s", "time/step_s")},
        "kl_sampler_trainer_max": max(abs(r.get("train/kl_sampler_trainer") or 0.0) for r in steps),
        "tis_truncated_mean": statistics.fmean(r.get("train/tis_truncated", 0.0) for r in steps),
    }
    metrics = out / "eval" / "arith" / "metrics.json"
    if metrics.is_file():
        m = json.loads(metrics.read_text())
        result["accuracy"], result["ci95"] = m["accuracy"], m["ci95_wilson"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--eval-problems", type=int, default=300, help="held-out arith problems (0: none)")
    parser.add_argument("--set", nargs="*", default=[], help="further recipe overrides for both runs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = [run(s, args, Path(tmp)) for s in (0, 1)]
    sync, ahead = results
    print(f"GRPO on tiny through mathrl serve, {args.steps} steps each (configs/tiny/grpo.yaml)")
    print(f"{'max_staleness':>14} {'steps/s':>8} {'wait':>6} {'sample':>7} {'grade':>6} {'train':>6} "
          f"{'publish':>8} {'step':>6} {'staleness':>9} {'accuracy (95% CI)':>22}")
    for r in results:
        p = r["phases"]
        ci = r.get("ci95")
        acc = (f"{100 * r['accuracy']:.1f}% [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci
               else f"{100 * r['accuracy']:.1f}%" if "accuracy" in r else "-")
        print(f"{r['staleness']:>14} {r['steps_per_s']:>8.3f} {p['time/rollout_wait_s']:>6.2f} "
              f"{p['time/sampling_s']:>7.2f} {p['time/grading_s']:>6.2f} {p['time/training_s']:>6.2f} "
              f"{p['time/publish_s']:>8.2f} {p['time/step_s']:>6.2f} {r['max_staleness_seen']:>9} {acc:>22}")
    print(f"speed-up (steps/s, max_staleness 1 vs 0): {ahead['steps_per_s'] / sync['steps_per_s']:.2f}x")
    print(f"max_staleness 1: max |KL(sampler || trainer)| {ahead['kl_sampler_trainer_max']:.2e}, "
          f"tokens truncated {100 * ahead['tis_truncated_mean']:.2f}%, "
          f"groups dropped {ahead['dropped_groups']}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
