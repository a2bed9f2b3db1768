"""Every recipe in configs/ parses, its datasets resolve, its inputs are some recipe's outputs, and the
study recipes carry the studies' published hyperparameters."""

import argparse
import dataclasses
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
FILES = sorted(ROOT.glob("**/*.yaml"))
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
    assert {p.relative_to(ROOT).parts[0] for p in FILES} == {"tiny", "study1", "study2"}
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


S1 = "study1_math_reasoning_qwen3_4b.md"
S2 = "study2_token_efficiency_qwen3_8b.md"
MATH_SUFFIX = " Write your answer in \\boxed{} format."
GSM8K_SUFFIX = " Provide a numerical answer without units, written inside \\boxed{}."
TINKER = "Tinker cookbook default (the study is silent)"
RECIPE = "the math_efficiency recipe study 2 ran (its write-up is silent)"
S1_EVAL = [("temperature", 0.01, (S1, 161)), ("max_tokens", 2048, (S1, 162)), ("n", 1, (S1, 23))]
S1_PROMPT = [("system_prompt", "", (S1, 48)), ("few_shot", "tinker_math", (S1, 163)),
             ("suffix", MATH_SUFFIX, (S1, 48))]
S2_EVAL = [("num_problems", 100, (S2, 120)), ("shuffle_seed", 42, RECIPE), ("n", 4, (S2, 121)),
           ("temperature", 1.0, RECIPE), ("max_tokens", 2048, (S2, 26))]
S2_PROMPT = [("system_prompt", "", RECIPE), ("few_shot", "none", RECIPE), ("suffix", GSM8K_SUFFIX, RECIPE),
             ("thinking", True, (S2, 27))]
S1_BENCHMARKS = ("math500", "aime2024", "aime2025", "gsm8k", "olympiadbench_numerical")

# Every setting the studies state, as (recipe, key, value, where: (seed file, line) or a source).
STATED = [
    ("study1/baseline.yaml", "model", "Qwen/Qwen3-4B-Instruct-2507", (S1, 17)),
    ("study1/baseline.yaml", "benchmarks", ",".join(S1_BENCHMARKS), (S1, 152)),
    *[("study1/baseline.yaml", k, v, w) for k, v, w in S1_EVAL + S1_PROMPT],
    ("study1/distill_math.yaml", "teacher_model", "Qwen/Qwen3-235B-A22B-Instruct-2507", (S1, 56)),
    ("study1/distill_math.yaml", "dataset", "math_hard", (S1, 60)),
    ("study1/distill_math.yaml", "n", 1, (S1, 63)),
    *[("study1/distill_math.yaml", k, v, w) for k, v, w in S1_PROMPT],
    ("study1/distill_olympiad.yaml", "dataset", "olympiadbench_numerical", (S1, 59)),
    ("study1/sft_a.yaml", "model", "Qwen/Qwen3-4B-Instruct-2507", (S1, 17)),
    ("study1/sft_a.yaml", "finetune", "lora", (S1, 80)),
    ("study1/sft_a.yaml", "lora.rank", 64, (S1, 85)),
    ("study1/sft_a.yaml", "lora.alpha", 32, TINKER),
    ("study1/sft_a.yaml", "grad_clip", 0.0, TINKER),
    ("study1/sft_a.yaml", "lr", 2e-4, (S1, 86)),
    ("study1/sft_a.yaml", "batch_size", 32, (S1, 87)),
    ("study1/sft_a.yaml", "last_batch", "drop", (S1, 87)),  # 119 steps/epoch from 3,825 traces
    ("study1/sft_a.yaml", "epochs", 2, (S1, 88)),
    ("study1/sft_a.yaml", "max_length", 4096, (S1, 89)),
    ("study1/sft_a.yaml", "adam_beta1", 0.9, (S1, 90)),
    ("study1/sft_a.yaml", "adam_beta2", 0.95, (S1, 90)),
    ("study1/sft_a.yaml", "schedule", "linear", (S1, 90)),
    ("study1/sft_a.yaml", "min_lr_ratio", 0.0, (S1, 90)),  # "decay to 0"
    ("study1/sft_a.yaml", "data", ("runs/study1/traces_math_hard.jsonl", "runs/study1/traces_olympiad.jsonl"),
     (S1, 93)),
    ("study1/sft_b.yaml", "data", ("runs/study1/traces_math_hard.jsonl", "runs/study1/traces_olympiad.jsonl"),
     (S1, 209)),
    ("study1/sft_b.yaml", "lr", 5e-4, (S1, 209)),
    ("study1/sft_b.yaml", "epochs", 1, (S1, 209)),
    ("study1/sft_b.yaml", "batch_size", 32, (S1, 87)),
    ("study1/grpo_v1.yaml", "dataset", "math_train", (S1, 106)),
    ("study1/grpo_v1.yaml", "levels", None, (S1, 106)),
    ("study1/grpo_v1.yaml", "lora.rank", 64, (S1, 107)),
    ("study1/grpo_v1.yaml", "lora.alpha", 32, TINKER),
    ("study1/grpo_v1.yaml", "grad_clip", 0.0, TINKER),
    ("study1/grpo_v1.yaml", "lr", 4e-5, (S1, 108)),
    ("study1/grpo_v1.yaml", "groups_per_batch", 128, (S1, 109)),
    ("study1/grpo_v1.yaml", "group_size", 16, (S1, 110)),
    ("study1/grpo_v1.yaml", "max_tokens", 2048, (S1, 111)),
    ("study1/grpo_v1.yaml", "loss", "importance_sampling", (S1, 112)),
    ("study1/grpo_v1.yaml", "normalization", "token_sum", TINKER),
    ("study1/grpo_v1.yaml", "epochs", 1, (S1, 113)),
    ("study1/grpo_v1.yaml", "last_batch", "drop", (S1, 113)),  # 58 batches
    ("study1/grpo_v1.yaml", "rewards", {"correct": 1.0}, (S1, 137)),
    ("study1/grpo_v1.yaml", "scale_advantages", False, (S1, 146)),
    ("study1/grpo_v1.yaml", "adapter", None, (S1, 116)),
    *[("study1/grpo_v1.yaml", f"prompt.{k}", v, w) for k, v, w in S1_PROMPT],
    ("study1/grpo_v2.yaml", "levels", (4, 5), (S1, 122)),
    ("study1/grpo_v2.yaml", "groups_per_batch", 64, (S1, 123)),
    ("study1/grpo_v2.yaml", "max_tokens", 4096, (S1, 124)),
    ("study1/grpo_v2.yaml", "epochs", 2, (S1, 125)),
    ("study1/grpo_v2.yaml", "lr", 4e-5, (S1, 108)),  # "Other params: same as v1" (L.126)
    ("study1/grpo_v2.yaml", "group_size", 16, (S1, 110)),
    ("study1/grpo_v3.yaml", "adapter", "runs/study1/grpo_v2/final", (S1, 129)),
    ("study1/grpo_v3.yaml", "lr", 2e-5, (S1, 130)),
    ("study1/grpo_v3.yaml", "epochs", 2, (S1, 131)),
    ("study1/grpo_v3.yaml", "levels", (4, 5), (S1, 131)),
    ("study1/sft_grpo.yaml", "adapter", "runs/study1/sft_a/final", (S1, 256)),
    ("study1/sft_grpo.yaml", "groups_per_batch", 128, (S1, 109)),
    ("study1/sft_grpo.yaml", "max_tokens", 2048, (S1, 111)),
    ("study2/baseline.yaml", "model", "Qwen/Qwen3-8B", (S2, 119)),
    ("study2/baseline.yaml", "benchmarks", "gsm8k_train", RECIPE),
    *[("study2/baseline.yaml", k, v, w) for k, v, w in S2_EVAL + S2_PROMPT],
    ("study2/rejection_sample.yaml", "model", "Qwen/Qwen3-8B", (S2, 129)),
    ("study2/rejection_sample.yaml", "dataset", "gsm8k_train", RECIPE),
    ("study2/rejection_sample.yaml", "shuffle_seed", 42, RECIPE),
    ("study2/rejection_sample.yaml", "num_problems", 100, (S2, 131)),
    ("study2/rejection_sample.yaml", "n", 16, (S2, 130)),
    ("study2/rejection_sample.yaml", "keep", "shortest", (S2, 35)),
    ("study2/rejection_sample.yaml", "temperature", 1.0, RECIPE),
    ("study2/rejection_sample.yaml", "max_tokens", 2048, RECIPE),
    *[("study2/rejection_sample.yaml", k, v, w) for k, v, w in S2_PROMPT],
    ("study2/rs_sft.yaml", "model", "Qwen/Qwen3-8B", (S2, 136)),
    ("study2/rs_sft.yaml", "lora.rank", 128, (S2, 40)),
    ("study2/rs_sft.yaml", "lora.alpha", 32, TINKER),
    ("study2/rs_sft.yaml", "grad_clip", 0.0, TINKER),
    ("study2/rs_sft.yaml", "lr", 5e-5, (S2, 39)),
    ("study2/rs_sft.yaml", "epochs", 2, (S2, 41)),
    ("study2/rs_sft.yaml", "batch_size", 8, (S2, 42)),
    ("study2/rs_sft.yaml", "max_length", 2048, RECIPE),
    ("study2/rs_sft.yaml", "last_batch", "drop", RECIPE),  # 22 steps from 94 traces
    ("study2/rs_sft.yaml", "data", ("runs/study2/rs_traces.jsonl",), (S2, 137)),
    ("study2/rl_short.yaml", "model", "Qwen/Qwen3-8B", (S2, 148)),
    ("study2/rl_short.yaml", "dataset", "gsm8k_train", RECIPE),
    ("study2/rl_short.yaml", "num_problems", 10, (S2, 63)),
    ("study2/rl_short.yaml", "epochs", 1, (S2, 63)),
    ("study2/rl_short.yaml", "group_size", 8, (S2, 64)),
    ("study2/rl_short.yaml", "groups_per_batch", 32, (S2, 64)),
    ("study2/rl_short.yaml", "lora.rank", 128, (S2, 65)),
    ("study2/rl_short.yaml", "lr", 5e-7, (S2, 66)),
    ("study2/rl_short.yaml", "rewards", {"correct": 0.0, "efficiency": 1.0}, (S2, 98)),
    ("study2/rl_short.yaml", "last_batch", "keep", TINKER),
    *[("study2/rl_short.yaml", f"prompt.{k}", v, w) for k, v, w in S2_PROMPT],
    ("study2/rl_long.yaml", "num_problems", 100, (S2, 80)),
    ("study2/rl_long.yaml", "epochs", 4, (S2, 80)),
    ("study2/rl_long.yaml", "lr", 5e-7, (S2, 66)),
    ("study2/rl_long.yaml", "group_size", 8, (S2, 64)),
    ("study2/rl_long.yaml", "groups_per_batch", 32, (S2, 64)),
]
# Stated numbers a recipe cannot equal, each with the words of the recipe comment that says why.
EXPLAINED = [
    ("study1/distill_olympiad.yaml", "from ~500 problems", (S1, 59)),  # the numerical set has 572
    ("study2/rl_short.yaml", "which its own settings do not give", (S2, 63)),  # "(4 batches)"
    ("study2/rl_short.yaml", "timed out", (S2, 69)),  # 68/100 evaluated
]
SEEDS = Path(__file__).resolve().parents[2] / "shared" / "seeds"


@pytest.mark.parametrize("name", sorted({row[0] for row in STATED}))
def test_every_stated_setting_of_the_studies_is_in_its_recipe(name):
    kind, cfg = recipe(name)
    for _, key, expected, where in [row for row in STATED if row[0] == name]:
        got = _field(cfg, key)
        assert got == expected, f"{name}: {key} is {got!r}; {where} says {expected!r}"
    if kind in ("sft", "grpo"):
        # Training runs end with their study's protocol, so reports compare like with like.
        study_eval, study_prompt = (S1_EVAL, S1_PROMPT) if name.startswith("study1") else (S2_EVAL, S2_PROMPT)
        for key, expected, where in study_eval:
            assert _field(cfg.eval, key) == expected, f"{name}: eval.{key}, {where}"
        for key, expected, where in study_prompt:
            assert _field(cfg.eval.prompt, key) == expected, f"{name}: eval.prompt.{key}, {where}"


@pytest.mark.skipif(not SEEDS.is_dir(), reason="the studies are in ../shared/seeds")
def test_the_cited_lines_say_what_the_table_says():
    """A cited line holds the value (or, for settings given in words, its key words)."""
    shown = {int: lambda v: [f"{v:,}", str(v)],
             float: lambda v: [f"{v:.0e}".replace("e-0", "e-"), f"{v:g}", str(v)]}
    for name, key, value, where in STATED:
        if not isinstance(where, tuple) or type(value) not in shown or isinstance(value, bool):
            continue
        line = (SEEDS / where[0]).read_text().splitlines()[where[1] - 1]
        assert any(form in line for form in shown[type(value)](value)), (name, key, value, where, line)
    for name, phrase, where in EXPLAINED:
        assert phrase in (ROOT / name).read_text(), f"{name} does not explain {where}"


def test_every_study_experiment_has_a_recipe():
    study = {n for n in NAMES if n.startswith("study") and "/tinker/" not in n}
    experiments = {n for n in study if recipe(n)[0] != "base"}
    clean = {"study1/sft_a_clean.yaml", "study2/baseline_clean.yaml"}  # the clean variants beside them
    assert experiments - clean == {row[0] for row in STATED} | {"study1/distill_olympiad.yaml"}


def test_every_study_training_recipe_has_a_tinker_variant_that_differs_only_in_where_it_trains():
    """configs/studyN/tinker/X.yaml is X.yaml with `learner: tinker` (and the Tinker run's adapter
    where X starts from another run); the teacher and rejection samplers sample on the service."""
    local = {n for n in NAMES if n.startswith("study") and "/tinker/" not in n}
    for name in sorted(local):
        kind, cfg = recipe(name)
        if kind not in ("sft", "grpo", "distill", "rejection-sample"):
            continue
        variant = name.replace("/", "/tinker/", 1)
        assert variant in NAMES, f"{name} has no Tinker variant {variant}"
        tkind, tcfg = recipe(variant)
        assert tkind == kind
        if kind in ("distill", "rejection-sample"):
            where = {"config_file", "tinker", "teacher"}  # the teacher: a model name there, a URL here
            assert tcfg.tinker == "" and cfg.tinker is None
            assert {k: v for k, v in vars(tcfg).items() if k not in where} == {
                k: v for k, v in vars(cfg).items() if k not in where}
            continue
        assert tcfg.learner == "tinker" and cfg.learner == "local"
        check = load_config(type(cfg), ROOT / name, ["learner=tinker"])  # the same recipe, accepted on Tinker
        expected = {"learner": "tinker"}
        if cfg.adapter:
            assert tcfg.adapter == cfg.adapter.replace(f"runs/{name.split('/')[0]}/",
                                                       f"runs/{name.split('/')[0]}/tinker/")
            expected["adapter"] = tcfg.adapter
        assert tcfg == dataclasses.replace(check, **expected)
        assert str(default_run_dir(Path("configs") / variant)) == f"runs/{variant.removesuffix('.yaml')}"


def test_the_study1_prompt_is_the_cookbooks_exchange_then_the_question_with_its_suffix(data_dir):
    """The rendered prompt of MATH-500's first problem under configs/study1/eval.yaml."""
    from mathrl.commands import prompt_from_args

    _, args = recipe("study1/baseline.yaml")
    problem = load_dataset("math500", data_dir).problems[0]
    expected = [
        {"role": "user", "content": "How many r's are in strawberry? Write your answer in \\boxed{} format."},
        {"role": "assistant", "content": "Let's spell the word out and number all the letters: 1) s 2) t "
         "3) r 4) a 5) w 6) b 7) e 8) r 9) r 10) y. We have r's at positions 3, 8, and 9. \\boxed{3}"},
        {"role": "user", "content": "Convert the point $(0,3)$ in rectangular coordinates to polar "
         "coordinates.  Enter your answer in the form $(r,\\theta),$ where $r > 0$ and $0 \\le \\theta "
         "< 2 \\pi.$ Write your answer in \\boxed{} format."},
    ]
    assert problem.id == "test/precalculus/807.json"
    assert prompt_from_args(args).messages(problem, "math500") == expected


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


def test_the_token_estimate_counts_the_recipes_steps_and_samples(data_dir):
    """scripts/tinker_tokens.py (the README's table): GRPO v1 is 58 steps of 128 groups x 16
    samples of at most 2,048 tokens, then five benchmarks of greedy answers of at most 2,048."""
    import importlib.util

    script = ROOT.parents[2] / "scripts" / "tinker_tokens.py"
    spec = importlib.util.spec_from_file_location("tinker_tokens", script)
    tokens = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tokens)
    row = tokens.estimate(ROOT / "study1/tinker/grpo_v1.yaml", data_dir)
    evals = sum(len(load_dataset(b, data_dir)) for b in recipe("study1/grpo_v1.yaml")[1].eval.benchmarks)
    assert row["steps"] == 58
    assert row["sampled"] == 58 * 128 * 16 * 2048 + evals * 2048
    assert 58 * 128 * 16 * 2048 < row["trained"] < 58 * 128 * 16 * (2048 + 1000)
    sft = tokens.estimate(ROOT / "study1/tinker/sft_a.yaml", data_dir)
    assert sft["steps"] == 238 and sft["trained"] == 238 * 32 * 4096
