"""Several processes, one run: ``torchrun --nproc_per_node 2`` on CPUs (gloo) trains what one
process trains on the same global batch, writes each metric line once, and resumes after
torchrun is SIGKILLed to the weights of an uninterrupted run."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from recipes import kill_after, logged_steps, run_recipe
from safetensors.torch import load_file

from mathrl.distributed import SINGLE, Dist, from_env, session

GRPO = ("max_steps=6", "num_problems=64", "groups_per_batch=8", "group_size=4", "max_tokens=48",
        "save_every=2", "eval.benchmarks=[]", "lr=1e-4")
# fp32 sums taken in another order (per rank, then across ranks) differ in the last bits, and
# Adam's step is lr-sized whatever the gradient's size, so the weights drift apart by a small
# multiple of lr x that noise: the runs here use a 4B model's learning rates (1e-4 and below),
# not the tiny recipes' 3e-3.
TOLERANCE = 1e-5


def torchrun(command, config, out, *overrides, wait=True):
    """``torchrun --standalone --nproc_per_node 2 -m mathrl.cli COMMAND CONFIG --out OUT ...``,
    in a session of its own (so the whole job can be killed as a scheduler kills it)."""
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
            "-m", "mathrl.cli", command, config, "--out", str(out), *overrides]
    if not wait:
        return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
    return subprocess.run(argv, capture_output=True, text=True, timeout=600)


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return {k: v for f in sorted(folder.glob("*.safetensors")) for k, v in load_file(f).items()}


def max_difference(a: Path, b: Path) -> float:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    return max((wa[k] - wb[k]).abs().max().item() for k in wa)


def metric_lines(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def ok(result) -> None:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


@pytest.fixture(scope="module")
def grpo_runs(tmp_path_factory):
    """The same tiny GRPO recipe in one process and in two."""
    root = tmp_path_factory.mktemp("grpo")
    ok(run_recipe("grpo", "configs/tiny/grpo.yaml", root / "one", *GRPO))
    ok(torchrun("grpo", "configs/tiny/grpo.yaml", root / "two", *GRPO))
    return root / "one", root / "two"


def test_share_splits_whole_items_contiguously():
    for world in (1, 2, 3, 5):
        for n in (0, 1, 7, 8, 16):
            shares = [list(Dist(r, world).share(n)) for r in range(world)]
            assert [i for s in shares for i in s] == list(range(n))
            assert max(map(len, shares)) - min(map(len, shares)) <= 1


def test_one_process_is_the_plain_run():
    assert from_env({}) == (0, 1, 0)
    assert from_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}) == (3, 4, 1)
    with session("cpu") as d:
        assert d == SINGLE and d.main and not d.enabled
        assert d.sum([1, 2.5]) == [1.0, 2.5] and d.max(3) == 3 and d.gather("x") == ["x"]
        assert list(d.share(5)) == list(range(5))


@pytest.mark.slow
def test_grpo_on_two_processes_trains_what_one_process_trains(grpo_runs):
    one, two = grpo_runs
    assert max_difference(one / "final", two / "final") < TOLERANCE
    lines_one, lines_two = metric_lines(one), metric_lines(two)
    assert [m["step"] for m in lines_two] == [1, 2, 3, 4, 5, 6]  # rank 0 alone writes, once a step
    for a, b in zip(lines_one, lines_two, strict=True):
        # The same samples (a prompt's draws do not depend on the rank that samples it) ...
        for key in ("reward/mean", "tokens/mean", "groups/mixed", "train/sequences", "train/tokens"):
            assert a[key] == b[key], key
        # ... and the same loss, summed over the ranks.
        assert a["train/loss"] == pytest.approx(b["train/loss"], rel=1e-4, abs=1e-7)
    assert sorted(p.name for p in (two / "checkpoints").iterdir()) == ["step_000004", "step_000006"]


@pytest.mark.slow
def test_a_sigkilled_torchrun_job_resumes_to_the_uninterrupted_weights(grpo_runs, tmp_path):
    """Each rank samples through its own ``mathrl serve`` engine; SIGKILL torchrun mid-run, rerun."""
    _, two = grpo_runs
    run = tmp_path / "killed"
    served = (*GRPO, "rollout.engine=serve")
    job = torchrun("grpo", "configs/tiny/grpo.yaml", run, *served, wait=False)
    kill_after(job, lambda: logged_steps(run, "reward/mean"), 3)  # SIGKILL torchrun after step 3
    # Its workers go with it, and their engines with them (each asked for a signal at its
    # parent's death), as a scheduler's kill of the whole job would take them.
    assert wait_until(lambda: not _alive(job.pid))
    assert not (run / "final").exists() and (run / "checkpoints" / "step_000002").is_dir()
    ok(torchrun("grpo", "configs/tiny/grpo.yaml", run, *served))
    lines = metric_lines(run)
    assert [m["step"] for m in lines] == [1, 2, 3, 4, 5, 6]  # nothing lost or doubled
    assert [m["rollout/policy_version"] for m in lines] == [0, 1, 2, 3, 4, 5]
    assert max(abs(m["train/kl_sampler_trainer"]) for m in lines) < 1e-5  # engines sample the published step
    # The engines draw what the in-process sampler draws (per-prompt seeds), so the run ends where
    # the uninterrupted in-process run does, up to the engines' float noise in the logprobs.
    assert [m["reward/mean"] for m in lines] == [m["reward/mean"] for m in metric_lines(two)]
    assert max_difference(two / "final", run / "final") < TOLERANCE


@pytest.mark.slow
def test_rollouts_one_step_ahead_under_torchrun_each_rank_with_its_engine(grpo_runs, tmp_path):
    """rollout.max_staleness: 1 with a `mathrl serve` per rank: each rank's producer samples its
    share on its engine, the training loop gathers the shares."""
    _, two = grpo_runs
    run = tmp_path / "ahead"
    settings = [s for s in GRPO if not s.startswith("max_steps")]
    ok(torchrun("grpo", "configs/tiny/grpo.yaml", run, *settings, "max_steps=4", "rollout.engine=serve",
                "rollout.max_staleness=1"))
    lines = metric_lines(run)
    assert [m["step"] for m in lines] == [1, 2, 3, 4]  # once a step
    assert [m["rollout/policy_version"] for m in lines] == [0, 0, 1, 2]  # sampled while the last trained
    assert [m["rollout/staleness"] for m in lines] == [0, 1, 1, 1]
    # The first batch is the initial weights' draws, per-prompt seeded: the synchronous run's.
    sync = metric_lines(two)[0]
    for key in ("reward/mean", "tokens/mean", "train/sequences", "train/tokens"):
        assert lines[0][key] == sync[key], key
    assert (run / "final" / "adapter_model.safetensors").is_file()


def _alive(session: int) -> bool:
    try:
        os.killpg(session, 0)
    except ProcessLookupError:
        return False
    return True


def wait_until(condition, poll_s=0.05) -> bool:
    while not condition():
        time.sleep(poll_s)
    return True


@pytest.mark.slow
def test_packed_sft_on_two_processes_trains_what_one_process_trains(tmp_path):
    traces = tmp_path / "traces.jsonl"
    made = subprocess.run([sys.executable, "-m", "mathrl.cli", "toy", "traces", "--out", str(traces),
                           "--num-problems", "60"], capture_output=True, text=True)
    ok(made)
    sft = (f"data=[{traces}]", "max_steps=3", "batch_size=16", "micro_batch_size=2", "packing=true",
           "lr=1e-4",
           "eval.benchmarks=[]", "save_every=0")
    ok(run_recipe("sft", "configs/tiny/sft.yaml", tmp_path / "one", *sft))
    ok(torchrun("sft", "configs/tiny/sft.yaml", tmp_path / "two", *sft))
    assert max_difference(tmp_path / "one" / "final", tmp_path / "two" / "final") < TOLERANCE
    losses = [[m["train/loss"] for m in metric_lines(tmp_path / r)] for r in ("one", "two")]
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)


@pytest.mark.slow
def test_full_fine_tuning_under_fsdp_trains_what_one_process_trains(tmp_path):
    """FSDP2 shards the weights; sampling and the final eval gather them; the checkpoint is a
    whole model folder that ``mathrl eval --model`` loads."""
    # Micro-batches of 4 sequences: ranks with different counts, each reduce-scattered.
    full = (*GRPO, "finetune=full", "lr=1e-5", "max_steps=3", "micro_batch_size=4", "eval.benchmarks=[arith]",
            "eval.num_problems=16", "eval.max_tokens=64")
    ok(run_recipe("grpo", "configs/tiny/grpo.yaml", tmp_path / "one", *full))
    result = torchrun("grpo", "configs/tiny/grpo.yaml", tmp_path / "two", *full)
    ok(result)
    assert "2 processes (FSDP)" in " ".join(result.stdout.split())
    assert max_difference(tmp_path / "one" / "final", tmp_path / "two" / "final") < TOLERANCE
    one, two = (json.loads((tmp_path / r / "summary.json").read_text()) for r in ("one", "two"))
    assert one["eval/arith/accuracy"] == two["eval/arith/accuracy"]
    evaluated = subprocess.run([sys.executable, "-m", "mathrl.cli", "eval", "--model",
                                str(tmp_path / "two" / "final"),
                                "--benchmarks", "arith", "--num-problems", "16", "--max-tokens", "64",
                                "--out", str(tmp_path / "eval")], capture_output=True, text=True)
    ok(evaluated)
    metrics = json.loads(next((tmp_path / "eval").rglob("metrics.json")).read_text())
    assert metrics["accuracy"] == two["eval/arith/accuracy"]
    # A checkpoint is the same files whatever wrote it (whole weights, optimizer state by
    # parameter name): the two-process run's step 2 resumes in one process.
    three = tmp_path / "three"
    shutil.copytree(tmp_path / "two", three)
    for written_after_step_2 in ("final", "eval", "checkpoints/step_000003"):
        shutil.rmtree(three / written_after_step_2)
    resumed = run_recipe("grpo", "configs/tiny/grpo.yaml", three, *full)
    ok(resumed)
    assert "resumed from" in resumed.stdout
    assert max_difference(tmp_path / "one" / "final", three / "final") < TOLERANCE
