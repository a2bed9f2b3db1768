"""Every recipe in configs/ parses, its datasets resolve, its inputs are some recipe's outputs, and the
study recipes carry the studies' published hyperparameters."""

import argparse
import functools
from pathlib import Path

import pytest
import yaml

from mathrl.cli import _apply_recipe, build_parser
from mathrl.commands.sft import default_run_dir
from mathrl.config import PACKAGED_RECIPES, load_config, read_recipe
from mathrl.data import REGISTRY, load_dataset
from mathrl.train.grpo import GRPOConfig
from mathrl.train.sft import SFTConfig

ROOT = PACKAGED_RECIPES
FILES = sorted(ROOT.glob("*/*.yaml"))
COMMAND_OF_KEY = (("teacher", "distill"), ("keep", "rejection-sample"), ("benchmarks", "eval"))


def _kind(path: Path) -> str:
    values, _ = read_recipe(path)
    for key, command in COMMAND_OF_KEY:
        if key in values:
            # An evaluation protocol without a model is a base the baselines extend.
            return command if command != "eval" or "model" in values else "base"
    if "data" in values:
        return "sft"
    if "dataset" in values:
        return "grpo"
    return "base"  # shared settings only (common.yaml): another recipe's base


@functools.cache
def _load(path: Path):
    kind = _kind(path)
    if kind == "sft":
        return kind, load_config(SFTConfig, path)
    if kind == "grpo":
        return kind, load_config(GRPOConfig, path)
    if kind == "base":
        return kind, None
    parser = build_parser()
    argv = [kind, "--config", str(path)]
    _apply_recipe(parser, argv)
    return kind, parser.parse_args(argv)


NAMES = [str(p.relative_to(ROOT)) for p in FILES]


def recipe(name: str):
    """(kind, parsed config) of a recipe, parsed on first use (errors fail a test, not collection)."""
    return _load(ROOT / name)


def test_the_recipe_folders_are_all_there():
    assert {p.parent.name for p in FILES} == {"tiny", "study1", "study2"}
    assert Path("configs").resolve() == ROOT.resolve() or not Path("configs").exists()


@pytest.mark.parametrize("name", NAMES)
def test_recipe_parses_and_resolves_its_datasets(name, data_dir):
    kind, cfg = recipe(name)
    path = ROOT / name
    assert path.read_text().startswith("#"), f"{name}: say what the recipe reproduces in a comment"
    if kind == "base":
        users = [
            p
            for p in FILES
            if (yaml.safe_load(p.read_text()) or {}).get("base") == path.name and p.parent == path.parent
        ]
        assert users, f"{name} has no recipe, nor is it any recipe's base"
        return
    if kind in ("sft", "grpo"):
        benchmarks = cfg.eval.benchmarks
    elif kind == "eval":
        benchmarks = tuple(cfg.benchmarks.split(","))
    else:
        benchmarks = ()
    for b in benchmarks:
        assert b in REGISTRY, f"{name}: unknown benchmark {b}"
        assert len(load_dataset(b, data_dir)) > 0
    dataset = getattr(cfg, "dataset", None)
    if dataset is not None:
        levels = getattr(cfg, "levels", None)
        if isinstance(levels, str):
            levels = [int(x) for x in levels.split(",")]
        loaded = load_dataset(dataset, data_dir, levels=levels)
        assert len(loaded) > 0, f"{name}: {dataset} at levels {levels} is empty"
        if levels:
            assert {p.level for p in loaded.problems} <= set(levels)


def _outputs() -> set[str]:
    """Files and run folders the study recipes write (their `out`, or runs/<study>/<recipe>)."""
    outs = set()
    for name, (kind, cfg) in ((n, recipe(n)) for n in NAMES):
        if kind in ("distill", "rejection-sample", "eval"):
            outs.add(str(cfg.out))
        elif kind in ("sft", "grpo"):
            outs.add(str(default_run_dir(Path("configs") / name)))
    return outs


@pytest.mark.parametrize("name", [n for n in NAMES if n.startswith("study")])
def test_study_recipes_chain_into_each_other(name):
    """What a study recipe reads (traces, an adapter) is what another study recipe writes."""
    kind, cfg = recipe(name)
    outs = _outputs()
    for data in getattr(cfg, "data", ()) or ():
        assert data in outs, f"{name}: data {data} is written by no recipe"
    adapter = getattr(cfg, "adapter", None)
    if adapter is not None:
        assert adapter.endswith("/final") and adapter.removesuffix("/final") in outs, name


def _field(cfg, key):
    value = cfg
    for part in key.split("."):
        value = value[part] if isinstance(value, dict) else getattr(value, part)
    return value


# The studies' published settings (../shared/DESIGN.md, "The two reference studies").
STUDY1_EVAL = {
    "benchmarks": ("math500", "aime2024", "aime2025", "gsm8k", "olympiadbench_numerical"),
    "temperature": 0.01,
    "max_tokens": 2048,
    "few_shot": True,
}
PUBLISHED = {
    "study1/baseline.yaml": {
        "model": "Qwen/Qwen3-4B-Instruct-2507",
        "benchmarks": ",".join(STUDY1_EVAL["benchmarks"]),
        "temperature": 0.01,
        "max_tokens": 2048,
        "few_shot": True,
        "n": 1,
    },
    "study1/distill_math.yaml": {
        "dataset": "math_hard",
        "teacher_model": "Qwen/Qwen3-235B-A22B-Instruct-2507",
    },
    "study1/distill_olympiad.yaml": {"dataset": "olympiadbench"},
    "study1/sft_a.yaml": {
        "model": "Qwen/Qwen3-4B-Instruct-2507",
        "finetune": "lora",
        "lora.rank": 64,
        "lr": 2e-4,
        "batch_size": 32,
        "epochs": 2,
        "max_length": 4096,
        "adam_beta1": 0.9,
        "adam_beta2": 0.95,
        "schedule": "linear",
        "data": ("runs/study1/traces_math_hard.jsonl",),
    },
    "study1/sft_b.yaml": {
        "lora.rank": 64,
        "lr": 2e-4,
        "batch_size": 32,
        "epochs": 2,
        "max_length": 4096,
        "data": ("runs/study1/traces_math_hard.jsonl", "runs/study1/traces_olympiad.jsonl"),
    },
    "study1/grpo_v1.yaml": {
        "dataset": "math_train",
        "levels": None,
        "lr": 4e-5,
        "groups_per_batch": 128,
        "group_size": 16,
        "max_tokens": 2048,
        "loss": "importance_sampling",
        "rewards": {"correct": 1.0},
        "lora.rank": 64,
        "adapter": None,
        "schedule": "constant",
    },
    "study1/grpo_v2.yaml": {
        "dataset": "math_train",
        "levels": (4, 5),
        "groups_per_batch": 64,
        "group_size": 16,
        "max_tokens": 4096,
        "epochs": 2,
        "lr": 4e-5,
        "loss": "importance_sampling",
    },
    "study1/grpo_v3.yaml": {
        "levels": (4, 5),
        "adapter": "runs/study1/grpo_v2/final",
        "lr": 2e-5,
        "epochs": 2,
        "groups_per_batch": 64,
        "max_tokens": 4096,
    },
    "study1/sft_grpo.yaml": {
        "adapter": "runs/study1/sft_a/final",
        "lr": 4e-5,
        "groups_per_batch": 128,
        "group_size": 16,
        "max_tokens": 2048,
    },
    "study2/baseline.yaml": {"model": "Qwen/Qwen3-8B", "benchmarks": "gsm8k", "thinking": True},
    "study2/rejection_sample.yaml": {
        "model": "Qwen/Qwen3-8B",
        "dataset": "gsm8k_train",
        "n": 16,
        "keep": "shortest",
    },
    "study2/rs_sft.yaml": {
        "model": "Qwen/Qwen3-8B",
        "lora.rank": 128,
        "lr": 5e-5,
        "epochs": 2,
        "batch_size": 8,
        "data": ("runs/study2/rs_traces.jsonl",),
    },
    "study2/rl_short.yaml": {
        "model": "Qwen/Qwen3-8B",
        "dataset": "gsm8k_train",
        "group_size": 8,
        "groups_per_batch": 32,
        "lora.rank": 128,
        "rewards": {"correct": 0.0, "efficiency": 1.0},
    },
    "study2/rl_long.yaml": {
        "group_size": 8,
        "groups_per_batch": 32,
        "lora.rank": 128,
        "rewards": {"correct": 0.0, "efficiency": 1.0},
        "max_steps": None,
        "epochs": 1,
    },
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_study_hyperparameters_match_the_studies(name):
    kind, cfg = recipe(name)
    for key, expected in PUBLISHED[name].items():
        assert _field(cfg, key) == expected, (
            f"{name}: {key} is {_field(cfg, key)!r}, the study used {expected!r}"
        )
    if kind in ("sft", "grpo") and name.startswith("study1"):
        # Training runs end with the baseline's protocol, so reports compare like with like.
        for key, expected in STUDY1_EVAL.items():
            assert getattr(cfg.eval, key) == expected, f"{name}: eval.{key}"


def test_every_study_experiment_has_a_recipe():
    study = {n for n in NAMES if n.startswith("study")}
    assert {n for n in study if recipe(n)[0] != "base"} == set(PUBLISHED)


def test_a_bad_key_in_an_option_recipe_names_file_and_line(tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("model: tiny\nbenchmarks: [arith]\nmax_tokenz: 5\n")
    with pytest.raises(Exception, match=r"bad.yaml:3: unknown setting 'max_tokenz'"):
        _apply_recipe(build_parser(), ["eval", "--config", str(recipe), "--out", "x"])


def test_command_line_flags_override_an_option_recipe(tmp_path):
    parser = build_parser()
    argv = ["eval", "--config", str(ROOT / "study1/baseline.yaml"), "--max-tokens", "512"]
    _apply_recipe(parser, argv)
    args = parser.parse_args(argv)
    assert isinstance(args, argparse.Namespace)
    assert (args.max_tokens, args.temperature, args.model) == (512, 0.01, "Qwen/Qwen3-4B-Instruct-2507")
    assert str(args.out) == "runs/study1/baseline"
