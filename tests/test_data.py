"""The dataset registry, loaders, validation, selection and overlap check."""

import json
import subprocess
import sys
from collections import Counter
from dataclasses import replace

import pytest

from mathrl.data import REGISTRY, DataError, FieldMap, load_dataset, select
from mathrl.data.overlap import exact_key, find_overlap

# Row counts from ../shared/data/MANIFEST.md. MATH train files have 2 rows with an empty
# \boxed{} (no gold answer): they are counted in the MANIFEST's numbers and skipped on load.
MANIFEST_ROWS = {
    "math500": 500, "aime2024": 30, "aime2025": 30, "amc23": 40, "gsm8k": 1319,
    "gsm8k_train": 7473, "olympiadbench": 675, "olympiadbench_numerical": 572, "minerva": 272,
    "math_train": 7500, "math_hard": 3994, "math_train_12k": 12000,
}
NO_ANSWER_ROWS = {"math_train": 2, "math_hard": 2, "math_train_12k": 2}


@pytest.mark.parametrize("name", sorted(MANIFEST_ROWS))
def test_every_shared_file_loads_with_the_manifest_counts(data_dir, name):
    ds = load_dataset(name, data_dir)
    assert len(ds) + ds.skipped == MANIFEST_ROWS[name]
    assert ds.skipped == NO_ANSWER_ROWS.get(name, 0)
    assert len({p.id for p in ds.problems}) == len(ds)
    assert all(p.problem.strip() and p.answer.strip() for p in ds.problems)


def test_every_registered_name_has_a_source():
    for spec in REGISTRY.values():
        assert spec.generate or spec.file or spec.hub, spec.name
        assert spec.kind in {"eval", "train"} and spec.extract in {"boxed", "auto"}


def test_fields_survive_loading(data_dir):
    math500 = load_dataset("math500", data_dir)
    assert Counter(p.level for p in math500.problems) == {1: 43, 2: 90, 3: 105, 4: 128, 5: 134}
    assert math500.problems[0].id == "test/precalculus/807.json"
    assert {p.answer for p in load_dataset("aime2024", data_dir).problems} >= {"025", "073"}
    assert sum("," in p.answer for p in load_dataset("gsm8k", data_dir).problems) == 14
    olympiad = {p.id: p for p in load_dataset("olympiadbench_numerical", data_dir).problems}
    assert olympiad["2592"].tolerance == 0.1 and olympiad["1606"].tolerance is None
    hard = load_dataset("math_hard", data_dir)
    assert {p.level for p in hard.problems} == {4, 5} and len(hard) == 3992
    assert load_dataset("math_train", data_dir).problems[0].subject == "Algebra"


def test_arith_comes_from_the_generator():
    ds = load_dataset("arith")
    assert len(ds) == 300 and ds.origin == "generated"
    assert {p.level for p in ds.problems} == {1, 2, 3}
    assert [p.level for p in load_dataset("arith", levels=[4], num_problems=5).problems] == [4] * 5
    assert len(load_dataset("arith_train", num_problems=40)) == 40


def test_subsample_is_seeded_stable_and_order_independent(data_dir):
    problems = load_dataset("math500", data_dir).problems
    small = select(problems, num_problems=50, seed=1)
    large = select(problems, num_problems=100, seed=1)
    assert len(small) == 50 and set(small) <= set(large)
    assert select(problems, num_problems=50, seed=1) == small
    assert select(problems, num_problems=50, seed=2) != small
    assert set(select(problems[::-1], num_problems=50, seed=1)) == set(small)
    assert [p.id for p in small] == [p.id for p in problems if p in set(small)]  # dataset order kept


def test_filters_and_shuffle(data_dir):
    problems = load_dataset("math500", data_dir).problems
    hard = select(problems, levels=[5], subjects=["algebra"])
    assert hard and all(p.level == 5 and p.subject == "Algebra" for p in hard)
    shuffled = select(problems, shuffle=True, seed=3)
    assert shuffled != list(problems) and sorted(p.id for p in shuffled) == sorted(p.id for p in problems)
    assert select(problems, shuffle=True, seed=3) == shuffled
    assert len(load_dataset("math500", data_dir, num_problems=10, levels=[1])) == 10


def _write(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return path


GOOD = [json.dumps({"id": f"p{i}", "problem": f"What is {i}+1?", "answer": str(i + 1), "level": 2})
        for i in range(10)]


@pytest.mark.parametrize("bad_line, message", [
    ('{"id": "x", "problem": "broken', r"bad\.jsonl:7: invalid JSON"),
    ('{"id": "x", "problem": "What?"}', r"bad\.jsonl:7: field 'answer' is missing or empty"),
    ('{"id": "x", "problem": "", "answer": "1"}', r"bad\.jsonl:7: field 'problem' is missing"),
    ('{"id": "p2", "problem": "Again?", "answer": "1"}',
     r"bad\.jsonl:7: field 'id' duplicate id 'p2' \(first at .*bad\.jsonl:3\)"),
    ('{"id": "x", "problem": "Q?", "answer": "1", "level": "hard"}', r"bad\.jsonl:7: field 'level'"),
    ('{"id": "x", "problem": "Q?", "answer": "1", "level": 0}', r"bad\.jsonl:7: field 'level'"),
    ('[1, 2]', r"bad\.jsonl:7: expected a JSON object"),
])
def test_malformed_rows_are_one_clear_error(tmp_path, bad_line, message):
    path = _write(tmp_path / "bad.jsonl", GOOD[:6] + [bad_line] + GOOD[6:])
    with pytest.raises(DataError, match=message):
        load_dataset(str(path))
    skipped = load_dataset(str(path), skip_invalid=True)
    assert skipped.skipped == 1 and len(skipped) == 10


def test_cli_reports_bad_input_without_a_traceback(tmp_path):
    path = _write(tmp_path / "bad.jsonl", GOOD[:6] + ['{"id": "x", "problem": "What?"}'])
    out = subprocess.run([sys.executable, "-m", "mathrl.cli", "data", "show", str(path)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip() == (f"mathrl data: error: {path}:7: field 'answer' is missing or empty")
    ok = subprocess.run([sys.executable, "-m", "mathrl.cli", "data", "show", str(path), "--skip-invalid",
                         "--n", "2"], capture_output=True, text=True, timeout=120)
    shown = " ".join(ok.stdout.split())  # rich wraps lines to the terminal width
    assert ok.returncode == 0 and "(1 rows skipped: no gold answer or invalid)" in shown
    assert "answer: 2" in shown


def test_level_spellings(tmp_path):
    rows = [{"id": "a", "problem": "Q", "answer": "1", "level": "Level 4"},
            {"id": "b", "problem": "Q", "answer": "1", "level": "Level ?"},
            {"id": "c", "problem": "Q", "answer": "1", "level": "3"},
            {"id": "d", "problem": "Q", "answer": "1"}]
    path = _write(tmp_path / "levels.jsonl", [json.dumps(r) for r in rows])
    assert [p.level for p in load_dataset(str(path)).problems] == [4, None, 3, None]


def test_user_csv_and_parquet_with_a_field_mapping(tmp_path):
    import datasets

    rows = {"question": ["What is 2+2?", "What is 3+3?"], "final": ["4", "6"], "uid": ["q1", "q2"]}
    datasets.Dataset.from_dict(rows).to_csv(str(tmp_path / "mine.csv"), index=False)
    datasets.Dataset.from_dict(rows).to_parquet(str(tmp_path / "mine.parquet"))
    fields = FieldMap(problem="question", answer="final", id="uid")
    for name in ("mine.csv", "mine.parquet"):
        ds = load_dataset(str(tmp_path / name), fields=fields)
        assert [(p.id, p.problem, p.answer) for p in ds.problems] == [
            ("q1", "What is 2+2?", "4"), ("q2", "What is 3+3?", "6")]
    missing = datasets.Dataset.from_dict({**rows, "final": ["4", None]})
    missing.to_csv(str(tmp_path / "missing.csv"), index=False)
    with pytest.raises(DataError, match=r"missing\.csv:3: field 'final' is missing"):
        load_dataset(str(tmp_path / "missing.csv"), fields=fields)


def _hub_copy(spec_name, tmp_path, split, rows):
    """A local folder laid out like the spec's hub dataset, loaded through `datasets` as the hub
    copy would be."""
    folder = tmp_path / spec_name
    folder.mkdir()
    _write(folder / f"{split}.jsonl", [json.dumps(r) for r in rows])
    spec = REGISTRY[spec_name]
    return replace(spec, file=None, hub=replace(spec.hub, dataset_id=str(folder), config=None))


def test_hub_field_mappings_through_datasets(tmp_path, monkeypatch):
    monkeypatch.delenv("MATHRL_DATA_DIR", raising=False)
    gsm8k = _hub_copy("gsm8k", tmp_path, "test", [
        {"question": "Tom has 3 apples and buys 1,000 more. How many?",
         "answer": "3 + 1000 = 1003\n#### 1,003"}])
    (p,) = load_dataset(gsm8k).problems
    assert p.answer == "1,003" and p.problem.startswith("Tom") and "####" in p.solution

    math = _hub_copy("math_hard", tmp_path, "train", [
        {"problem": "Find x.", "level": "Level 5", "type": "Algebra",
         "solution": "So $x=\\boxed{\\frac{1}{2}}$."},
        {"problem": "Find y.", "level": "Level 2", "type": "Algebra", "solution": "\\boxed{3}"},
        {"problem": "Find z.", "level": "Level 4", "type": "Number Theory", "solution": "Empty \\boxed{}."}])
    ds = load_dataset(math)
    assert [(p.answer, p.level, p.subject) for p in ds.problems] == [("\\frac{1}{2}", 5, "Algebra")]
    assert ds.skipped == 1  # the empty \boxed{}, as in the real MATH files

    olympiad = _hub_copy("olympiadbench_numerical", tmp_path, "train", [
        {"id": 7, "question": "Q1", "final_answer": ["$3$"], "solution": ["s"], "subfield": "Algebra",
         "answer_type": "Numerical", "error": "1e-1"},
        {"id": 8, "question": "Q2", "final_answer": ["$x+1$"], "solution": ["s"], "subfield": "Algebra",
         "answer_type": "Expression", "error": None}])
    (p,) = load_dataset(olympiad).problems
    assert (p.id, p.answer, p.tolerance, p.subject, p.solution) == ("7", "$3$", 0.1, "Algebra", "s")


def test_missing_sources_are_clear_errors(tmp_path, monkeypatch):
    monkeypatch.delenv("MATHRL_DATA_DIR", raising=False)
    with pytest.raises(DataError, match="amc23: no data directory is set"):
        load_dataset("amc23")
    with pytest.raises(DataError, match=r"amc23: .*amc23\.jsonl does not exist"):
        load_dataset("amc23", tmp_path)
    with pytest.raises(DataError, match="unknown dataset 'math501'"):
        load_dataset("math501")
    with pytest.raises(DataError, match="no such file"):
        load_dataset(str(tmp_path / "nope.jsonl"))


def test_exact_key_removes_dollars_and_whitespace():
    assert exact_key("Evaluate $\\log_8 2$.") == exact_key("Evaluate $\\log_82$.")
    assert exact_key("a  b\n c") == "abc"


def test_overlap_math_train_12k_vs_math500_has_no_exact_duplicates(data_dir):
    report = find_overlap(load_dataset("math_train_12k", data_dir).problems,
                          load_dataset("math500", data_dir).problems)
    assert report.exact_pairs == []
    assert 0 < len(report.eval_ids(exact=False)) < 100  # templated problems share 13-grams
    assert all(p.fraction <= 1 for p in report.pairs)


def test_overlap_finds_the_manifest_near_duplicates_in_math_train(data_dir):
    problems = load_dataset("math_train", data_dir).problems
    report = find_overlap(problems, problems)
    assert {(p.train.id, p.eval.id) for p in report.exact_pairs} == {
        ("train/algebra/27.json", "train/algebra/2794.json"),
        ("train/algebra/2463.json", "train/algebra/24377.json"),
        ("train/precalculus/1225.json", "train/precalculus/8013.json")}
    assert all(p.train.id != p.eval.id for p in report.pairs)


def test_overlap_cli(data_dir):
    out = subprocess.run([sys.executable, "-m", "mathrl.cli", "overlap", "math_train_12k", "math500",
                          "--data-dir", str(data_dir), "--examples", "1"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "exact duplicates: 0 pairs" in out.stdout and "sharing a 13-gram" in out.stdout


def test_data_list_cli(data_dir):
    # A pipe, no COLUMNS (what `mathrl data list | cat` and a CI log see): every name whole, every
    # row on one line, nothing wrapped.
    command = [sys.executable, "-m", "mathrl.cli", "data", "list", "--data-dir", str(data_dir)]
    out = subprocess.run(command, capture_output=True, text=True, timeout=300, env={"PATH": ""})
    assert out.returncode == 0, out.stderr
    assert max(map(len, out.stdout.splitlines())) < 2000  # whole rows, and rules not 100,000 wide
    lines = {line.split("│")[1].strip(): line for line in out.stdout.splitlines() if line.count("│") > 3}
    assert set(lines) == set(REGISTRY)
    assert "│ 3992 " in lines["math_hard"] and "│ 572 " in lines["olympiadbench_numerical"]
    assert all(REGISTRY[name].description in line for name, line in lines.items())
    listed = subprocess.run([*command, "--json"], capture_output=True, text=True, timeout=300,
                            env={"PATH": ""})
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [r["name"] for r in rows] == list(REGISTRY)
    assert {r["name"]: r["rows"] for r in rows}["math500"] == 500


def test_a_hub_style_shuffle_seed_picks_the_problems_a_hub_script_would(data_dir):
    """Study 2's problems: `load_dataset("openai/gsm8k", "main")["train"].shuffle(seed=42)`, first 100.
    datasets draws the order from numpy's default_rng(42).permutation over the split's rows."""
    import numpy as np

    chosen = load_dataset("gsm8k_train", data_dir, num_problems=100, shuffle_seed=42)
    order = np.random.default_rng(42).permutation(7473)[:100]
    assert [p.id for p in chosen.problems] == [f"gsm8k-train-{i:05d}" for i in order]
    assert chosen.problems[0].id == "gsm8k-train-03082"
    first10 = load_dataset("gsm8k_train", data_dir, num_problems=10, shuffle_seed=42).problems
    assert first10 == chosen.problems[:10]  # the short RL run's 10 are the first 10 of the same order


# ---- golds checked at load (mathrl.grading.golds) -----------------------------------------------

BAD_GOLDS = [  # (id, gold, the start of its reason)
    ("empty", "\\text{ }", "empty"),
    ("unbalanced", "\\frac{1}{2", "unbalanced braces"),
    ("boxed_inside", "\\boxed{3}}{", "not equal to itself"),
]
GOOD_GOLDS = [("number", "2"), ("bare_frac", "\\frac 59"), ("set", "\\{1,2\\}"),
              ("interval", "(-\\infty, 3]"), ("text", "\\text{Tuesday}"), ("base", "52_8")]


def _gold_file(tmp_path):
    path = tmp_path / "golds.jsonl"
    rows = [{"id": i, "problem": "p", "answer": a} for i, a, *_ in [*GOOD_GOLDS, *BAD_GOLDS]]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_golds_no_response_could_match_are_named_with_their_reason():
    from mathrl.grading.golds import gold_problem
    from mathrl.types import Problem

    for pid, gold, reason in BAD_GOLDS:
        found = gold_problem(Problem(pid, "p", gold), "boxed")
        assert found is not None and found.startswith(reason), (gold, found)
    for pid, gold in GOOD_GOLDS:
        assert gold_problem(Problem(pid, "p", gold), "boxed") is None, gold
    assert gold_problem(Problem("g", "p", "1,000"), "gsm8k") is None  # read back from "#### 1,000"


def test_loading_skips_bad_golds_with_one_line(tmp_path, capsys):
    ds = load_dataset(_gold_file(tmp_path))
    assert [p.id for p in ds.problems] == [i for i, _ in GOOD_GOLDS]
    assert [b.id for b in ds.bad_golds] == [i for i, *_ in BAD_GOLDS]
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("golds: skipped 3 problems whose gold answer")
    assert "mathrl data check" in lines[0]
    kept = load_dataset(_gold_file(tmp_path), check_golds=False)
    assert len(kept) == len(GOOD_GOLDS) + len(BAD_GOLDS) and not kept.bad_golds


def test_data_check_lists_bad_golds_and_exits_non_zero(tmp_path):
    out = subprocess.run([sys.executable, "-m", "mathrl.cli", "data", "check", str(_gold_file(tmp_path)),
                          "--json"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 1, out.stderr
    (row,) = [json.loads(line) for line in out.stdout.splitlines()]
    assert [b["id"] for b in row["bad_golds"]] == [i for i, *_ in BAD_GOLDS]
    assert all(b["reason"].startswith(r) for b, (_, _, r) in zip(row["bad_golds"], BAD_GOLDS, strict=True))


# The counts in the README's data table: every shared benchmark checked, as CI runs it.
README_BAD_GOLDS = dict.fromkeys(MANIFEST_ROWS, 0)


def test_data_check_over_every_shared_benchmark_matches_the_readme(data_dir):
    from pathlib import Path

    out = subprocess.run([sys.executable, "-m", "mathrl.cli", "data", "check", "--data-dir", str(data_dir),
                          "--json"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr
    rows = {r["dataset"]: r for r in map(json.loads, out.stdout.splitlines())}
    assert {name: len(r["bad_golds"]) for name, r in rows.items()} == README_BAD_GOLDS
    assert {name: r["skipped_rows"] for name, r in rows.items() if r["skipped_rows"]} == NO_ANSWER_ROWS
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    for name, count in README_BAD_GOLDS.items():
        row = f"| `{name}` | {MANIFEST_ROWS[name]:,} | {NO_ANSWER_ROWS.get(name, 0)} | {count} |"
        assert row in readme, name


def test_no_output_line_is_a_screen_wide_rule_in_a_log(data_dir, tmp_path):
    """In a pipe (no COLUMNS), no line is over 2,000 characters unless it is a command line or
    JSON: rules are drawn LOG_WIDTH wide, not the unbounded width that keeps tables whole."""
    env = {"PATH": "", "MATHRL_DATA_DIR": str(data_dir)}
    commands = [["data", "show", "math_hard", "--n", "3"],
                ["eval", "--config", "configs/study1/baseline.yaml", "--show-prompt"],
                ["data", "check", str(_gold_file(tmp_path))]]  # data list: test_data_list_cli
    for command in commands:
        out = subprocess.run([sys.executable, "-m", "mathrl.cli", *command], capture_output=True, text=True,
                             timeout=300, env=env)
        assert out.returncode in (0, 1), (command, out.stderr[-2000:])
        for line in (out.stdout + out.stderr).splitlines():
            if len(line) > 2000:
                assert line.startswith(("$ mathrl", "{", "[")), (command, line[:200])
