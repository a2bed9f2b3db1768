"""GRPO end to end on the tiny model: it learns, it resumes exactly, its checkpoints load."""

import json
import subprocess
import sys
from dataclasses import replace

import pytest
import torch
from recipes import kill_after, logged_steps, run_recipe
from safetensors.torch import load_file

from mathrl.tasks import arith
from mathrl.train.grpo import step_problems, steps_per_epoch
from mathrl.train.learner import Datum
from mathrl.train.local import collate
from mathrl.train.rl import group_advantages


def test_step_problems_are_fixed_per_step_and_cover_each_epoch():
    problems = arith.generate("train", 10, seed=0, levels=[1])
    epoch0 = [step_problems(problems, 3, seed=0, step=s) for s in range(3)]
    ids = [p.id for batch in epoch0 for p in batch]
    assert len(ids) == len(set(ids)) == 9  # 10 // 3 full batches; the partial one is skipped
    assert step_problems(problems, 3, 0, 1) == epoch0[1]
    assert step_problems(problems, 3, 0, 3) != epoch0[0]  # epoch 1 is another permutation
    kept = [step_problems(problems, 3, 0, s, "keep") for s in range(4)]
    assert [len(b) for b in kept] == [3, 3, 3, 1]
    assert {p.id for b in kept for p in b} == {p.id for p in problems}
    assert len(step_problems(problems[:5], 32, 0, 0)) == 5  # fewer problems than a batch: one batch of all
    assert steps_per_epoch(100, 32, "keep") == 4  # study 2's long run: 4 batches an epoch
    assert steps_per_epoch(7498, 128) == 58  # study 1's v1


def test_rollouts_mask_exactly_the_completion_tokens():
    seqs = [Datum.from_sequence((5, 6, 7, 8), 2, logprobs=(-0.1, -0.2), advantage=0.5),
            Datum.from_sequence((5, 9, 10), 1, logprobs=(-0.3, -0.4), advantage=-0.5)]
    batch = collate([[d] for d in seqs], pad_id=0, device=torch.device("cpu"))
    assert batch["input_ids_B_T"].tolist() == [[5, 6, 7, 8], [5, 9, 10, 0]]
    assert batch["mask_B_T"].tolist() == [[False, False, True, True], [False, True, True, False]]
    assert batch["sampler_logp_B_T"][0].tolist() == pytest.approx([0, 0, -0.1, -0.2])
    assert batch["sampler_logp_B_T"][1].tolist() == pytest.approx([0, -0.3, -0.4, 0])
    assert batch["advantages_B_T"].tolist() == [[0, 0, 0.5, 0.5], [0, -0.5, -0.5, 0]]


def _grpo(out, *overrides, wait=True):
    return run_recipe("grpo", "configs/tiny/grpo.yaml", out, *overrides, wait=wait, timeout=900)


def _steps(run):
    return logged_steps(run, "reward/mean")


@pytest.mark.slow
def test_killed_and_resumed_efficiency_run_ends_identically(tmp_path):
    settings = [
        "max_steps=6",
        "groups_per_batch=4",
        "group_size=4",
        "save_every=2",
        "max_tokens=64",
        "rewards.efficiency=1.0",
        "rewards.correct=0.0",
        "eval.benchmarks=[]",
        "lora.dropout=0.1",
    ]
    whole = _grpo(tmp_path / "whole", *settings)
    assert whole.returncode == 0, whole.stderr
    run = tmp_path / "killed"
    process = _grpo(run, *settings, wait=False)
    kill_after(process, lambda: _steps(run), 3)
    assert 3 <= max(_steps(run)) < 6, "the kill should land mid-run"
    resumed = _grpo(run, *settings)
    assert resumed.returncode == 0, resumed.stderr
    assert _steps(run) == list(range(1, 7))
    a = load_file(tmp_path / "whole" / "final" / "adapter_model.safetensors")
    b = load_file(run / "final" / "adapter_model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    best_whole = json.loads((tmp_path / "whole" / "efficiency_state.json").read_text())
    assert best_whole and best_whole == json.loads((run / "efficiency_state.json").read_text())
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(0 <= r["reward/efficiency"] <= 1 for r in rows if "reward/efficiency" in r)


def _eval(*args):
    return subprocess.run(
        [sys.executable, "-m", "mathrl.cli", "eval", "--benchmarks", "arith", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_the_tiny_recipe_raises_held_out_accuracy_and_its_adapter_loads_in_eval(tmp_path):
    from mathrl.models import TINY_PATH

    base = json.loads((TINY_PATH / "pretrain.json").read_text())["accuracy"]  # the same 300 problems
    out = _grpo(tmp_path / "run", "max_steps=60", "save_every=0")  # the full recipe: 125 steps
    assert out.returncode == 0, out.stderr
    own = json.loads((tmp_path / "run" / "eval" / "arith" / "metrics.json").read_text())
    assert own["problems"] == 300
    assert own["accuracy"] >= base + 0.08, (base, own["accuracy"])  # measured: 26.3% -> 38.0%
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "reward/mean" in r]
    assert len(steps) == 60 and all(r["groups/skipped_constant"] >= 0 for r in steps)
    assert all(abs(r["train/kl_sampler_trainer"]) < 1e-3 for r in steps if "train/kl_sampler_trainer" in r)
    ev = _eval(
        "--model",
        "tiny",
        "--adapter",
        str(tmp_path / "run" / "final"),
        "--max-tokens",
        "256",
        "--out",
        str(tmp_path / "ev"),
    )
    assert ev.returncode == 0, ev.stderr
    assert (
        json.loads((tmp_path / "ev" / "eval" / "arith" / "metrics.json").read_text())["accuracy"]
        == own["accuracy"]
    )


@pytest.mark.slow
def test_a_full_finetuning_checkpoint_loads_as_a_model(tmp_path):
    out = _grpo(
        tmp_path / "run",
        "finetune=full",
        "lr=1e-5",
        "max_steps=2",
        "groups_per_batch=4",
        "group_size=4",
        "eval.benchmarks=[]",
    )
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "run" / "final" / "config.json").is_file()
    ev = _eval(
        "--model",
        str(tmp_path / "run" / "final"),
        "--num-problems",
        "10",
        "--max-tokens",
        "64",
        "--out",
        str(tmp_path / "ev"),
    )
    assert ev.returncode == 0, ev.stderr


@pytest.mark.slow
def test_a_run_with_its_own_prompt_is_evaluated_with_that_prompt(tmp_path):
    out = tmp_path / "run"
    done = _grpo(out, "max_steps=1", "groups_per_batch=2", "group_size=2", "max_tokens=16",
                 "prompt.thinking=false", "prompt.system_prompt=Answer briefly.", "prompt.suffix=' Go.'",
                 "eval.benchmarks=[arith]", "eval.num_problems=4", "eval.max_tokens=16")
    assert done.returncode == 0, done.stderr
    protocol = json.loads((out / "eval" / "arith" / "metrics.json").read_text())["protocol"]
    assert protocol["thinking"] is False
    assert (protocol["system_prompt"], protocol["suffix"]) == ("Answer briefly.", " Go.")
    samples = (out / "eval" / "arith" / "samples.jsonl").read_text().splitlines()
    assert len(samples) == 4


def _groups_on_policy(learner, tokenizer, n_groups=4, size=3, seed=0):
    """Groups of random completions whose sampler logprobs are the learner's own (on policy)."""
    import random

    from mathrl.train.learner import Datum
    from mathrl.train.losses import Loss
    from mathrl.types import Completion, Graded, Group, Problem

    rng = random.Random(seed)
    prompts, groups = {}, []
    for g in range(n_groups):
        problem = Problem(f"p{g}", "?", "1")
        prompts[problem.id] = [rng.randrange(5, 200) for _ in range(rng.randint(3, 6))]
        completions = [tuple(rng.randrange(5, 200) for _ in range(rng.randint(2, 9))) for _ in range(size)]
        prompt = prompts[problem.id]
        datums = [Datum.from_sequence(prompt + list(c), len(prompt)) for c in completions]
        logprobs = learner.forward(datums, Loss("cross_entropy", entropy=False)).logprobs
        completions = tuple(Completion(c, tuple(lp[-len(c):]), "", "stop")
                            for c, lp in zip(completions, logprobs, strict=True))
        rewards = [float(i == g % size) for i in range(size)]
        graded = tuple(Graded(None, bool(r), {"correct": r}, r) for r in rewards)
        groups.append(Group(problem, completions, graded, tuple(group_advantages(rewards))))
    return groups, prompts


def test_substeps_are_optimizer_steps_on_parts_of_the_groups(tmp_path):
    from mathrl.models import load_tokenizer
    from mathrl.train.grpo import GRPOConfig, update
    from mathrl.train.learner import AdamParams
    from mathrl.train.local import LocalLearner
    from mathrl.train.rl import rl_datums

    tokenizer = load_tokenizer("tiny")
    cfg = GRPOConfig(model="tiny", dataset="arith_train", num_substeps=2, loss="ppo",
                     normalization="token_mean", max_tokens=16)
    adam = AdamParams(learning_rate=0.05)

    def learner():
        torch.manual_seed(0)
        return LocalLearner("tiny", tokenizer, tmp_path, lora=cfg.lora)

    substeps = learner()
    groups, prompts = _groups_on_policy(substeps, tokenizer)
    metrics = update(substeps, cfg.make_loss(), groups, prompts, cfg, adam)
    explicit = learner()
    for part in (groups[:2], groups[2:]):  # two half-batch updates, written out
        datums = rl_datums(part, prompts, cfg.normalization, cfg.max_tokens)
        explicit.forward_backward(datums, cfg.make_loss())
        explicit.optim_step(adam)
    a, b = substeps.model.state_dict(), explicit.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # The first substep is on policy (nothing clipped); the second clips against the
    # pre-update (sampling) policy, which is what substeps are for.
    assert metrics[0]["train/clip_fraction"] == 0 < metrics[1]["train/clip_fraction"]
    one = learner()
    update(one, cfg.make_loss(), groups, prompts, replace(cfg, num_substeps=1), adam)
    assert not all(torch.equal(a[k], v) for k, v in one.model.state_dict().items())
