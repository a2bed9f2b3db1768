"""The one grader: extraction, equivalence, safety, bounds, batch grading and `mathrl grade`."""

import json
import subprocess
import sys
import threading
import time

import pytest
from grader_rewrites import BREADTH, EQUAL, UNEQUAL
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mathrl.data import load_dataset
from mathrl.grading import (
    Grader,
    GradeRequest,
    answers_match,
    extract_answer,
    grade,
    last_boxed,
    strip_thinking,
)
from mathrl.grading.bounded import call_bounded
from mathrl.types import Problem


@pytest.mark.parametrize("text, expected", [
    (r"The answer is $\boxed{5}$.", "5"),
    (r"\boxed{\frac{1}{\sqrt{2}}}", r"\frac{1}{\sqrt{2}}"),
    (r"first \boxed{1} then \fbox{2}", "2"),
    (r"first \fbox{1} then \boxed{2}", "2"),
    (r"so \boxed 7.", "7"),
    (r"\boxed{1} and an unfinished \boxed{2", "1"),
    ("no box here", None),
    (r"\boxed{}", ""),
])
def test_last_boxed(text, expected):
    assert last_boxed(text) == expected


def test_thinking_is_removed_before_extraction():
    assert strip_thinking("<think>\n\\boxed{3}\n</think>\n\nSo \\boxed{4}") == "\n\nSo \\boxed{4}"
    assert extract_answer("<think>\n2 + 2 = 4, \\boxed{4}\n</think>\n\nDone.") is None
    # Output cut off inside the thought has no final answer, whatever it contains.
    assert extract_answer("<think>\n2 + 2 = \\boxed{4}") is None
    assert extract_answer("no thinking, \\boxed{9}") == "9"


@pytest.mark.parametrize("pred, gold, expected", [
    ("1,000", "1000", True), ("025", "25", True), ("-3", "-3", True), ("+3", "3", True),
    ("0.50", ".5", True), ("$42$", "42", True), ("42.", "42", True), (r"\!12", "12", True),
    ("3", "4", False), ("-3", "3", False), ("1,00", "100", False), (None, "1", False),
    ("", "0", False),
])
def test_answers_match(pred, gold, expected):
    assert answers_match(pred, gold) is expected


def test_grade_reads_the_final_boxed_answer():
    assert grade("<think>\n9 * 9 = 81\n</think>\n\nThe answer is $\\boxed{81}$.", "81")
    assert not grade("<think>\n9 * 9 = 80\n</think>\n\nThe answer is $\\boxed{80}$.", "81")


# ---- agreement with labelled real cases --------------------------------------------------------

def _grader_cases(data_dir):
    rows = [json.loads(line) for line in (data_dir / "grader_cases.jsonl").open()]
    # MANIFEST.md: Qwen's gold for this problem is mangled ("4:30p.."), its 8 labels are wrong.
    return [r for r in rows if r["problem_id"] != "test/prealgebra/1462.json"]


def test_agreement_with_labelled_grader_cases(data_dir):
    rows = _grader_cases(data_dir)
    assert len(rows) == 6068
    disagree = [r for r in rows if answers_match(r["model_answer"], r["gold_answer"]) != r["label"]]
    assert 1 - len(disagree) / len(rows) >= 0.995, disagree[:10]


def test_gsm8k_cases_graded_from_the_full_response(data_dir):
    rows = [r for r in _grader_cases(data_dir) if r["id"].startswith("gsm8k")]
    agree = sum(grade(r["response"], r["gold_answer"], extract="auto") == r["label"] for r in rows)
    assert agree / len(rows) >= 0.995


@pytest.mark.parametrize("name", ["math500", "aime2024", "aime2025", "amc23", "olympiadbench_numerical"])
def test_every_gold_answer_matches_itself_through_a_response(data_dir, name):
    for p in load_dataset(name, data_dir).problems:
        response = f"<think>\nwork\n</think>\n\nThe answer is $\\boxed{{{p.answer}}}$."
        assert grade(response, p.answer, tolerance=p.tolerance), (p.id, p.answer)


@pytest.mark.parametrize("pred, gold", EQUAL)
def test_equal_rewrites(pred, gold):
    assert answers_match(pred, gold) and answers_match(gold, pred)


@pytest.mark.parametrize("pred, gold", UNEQUAL)
def test_unequal_rewrites(pred, gold):
    assert not answers_match(pred, gold)


def test_benchmark_tolerance():
    assert answers_match("3.05", "3", tolerance=0.1) and not answers_match("3.05", "3")
    assert not answers_match("3.2", "3", tolerance=0.1)
    assert answers_match("\\frac{31}{10}", "3", tolerance=0.1)


@pytest.mark.parametrize("response, mode, expected", [
    ("so #### 1,234", "gsm8k", "1,234"),
    ("She makes 13 * 2 = $26\nA: 26", "gsm8k", "26"),
    ("Thus, the answer is 42.", "gsm8k", "42"),
    ("Final answer: $\\frac{1}{2}$", "auto", "\\frac{1}{2}"),
    ("We get 3 apples and then 7.", "gsm8k", "7"),
    ("It is \\boxed{5}. #### 6", "auto", "5"),
    ("It is \\boxed{5}. #### 6", "gsm8k", "6"),
    ("#### 6", "boxed", None),
    ("<think>\nthe answer is 4", "auto", None),
])
def test_extraction_modes(response, mode, expected):
    assert extract_answer(response, mode) == expected


# ---- safety and bounds ---------------------------------------------------------------------------

PAYLOADS = [
    "__import__('os').system('touch pwned')",
    "__import__(\"os\").system(\"touch pwned\")",
    "exec('open(\"pwned\",\"w\")')",
    "eval(\"__import__('os').system('touch pwned')\")",
    "().__class__.__bases__[0].__subclasses__()",
    "lambda: __import__('os').system('touch pwned')",
    "Symbol('x').__class__",
    "x.__globals__",
]


@pytest.mark.parametrize("payload", PAYLOADS)
def test_payloads_execute_nothing(payload, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for gold in ("0", "pwned", payload):
        response = f"\\boxed{{{payload}}}"
        assert grade(response, gold) in (True, False)
        assert answers_match(payload, gold) in (True, False)
        (result,) = Grader(processes=0).grade_requests([GradeRequest(gold=gold, response=response)])
        assert result.correct in (True, False)
    assert not (tmp_path / "pwned").exists()


HUGE = ["10^{10^{10}}", "9^{9^{9^{9}}}", "2^{2^{2^{2^{2^{2}}}}}", "100000!", "(10^{100})!",
        "\\frac{1}{" * 300 + "2" + "}" * 300, "(" * 500 + "1" + ")" * 500, "x^{10^{10}}",
        "1" * 5000, "\\sqrt{" * 200 + "2" + "}" * 200, "e^{e^{e^{e^{10}}}}", "10^{10^{10}} - 10^{10^{10}}"]


# The one timed check the suite keeps: the grader guarantees that every comparison returns within
# its bound (docs/grading.md), which RL relies on to never stall a step on a hostile answer. Each
# check allows the bound plus this much for a busy, shared machine: a broken bound (an unbounded
# sympy call) takes minutes or forever, so the slack cannot hide one.
SLACK_S = 5.0


@pytest.mark.parametrize("expr", HUGE)
def test_pathological_answers_return_within_the_bound(expr):
    start = time.perf_counter()
    for gold in ("1", expr, "x"):
        assert answers_match(expr, gold, timeout=2.0) in (True, False)
    assert time.perf_counter() - start < 3 * (2.0 + SLACK_S)


# Hostile responses: extraction is not under the comparison bound, so it must stay near-linear in
# the response's length (delimiters that never close, thousands of boxes, blank lines). Each took
# from 2 s to minutes before the extractor matched closers by bisection instead of rescanning.
HOSTILE = ["\n" * 200_000, "\\[" * 50_000, "\\(" * 50_000, "\\boxed{" * 20_000, "\\boxed{1} " * 20_000,
           "$1$ " * 50_000, "Answer:\n" * 20_000, "$a\n" * 50_000, "\\boxed{1} and " * 20_000]


@pytest.mark.parametrize("response", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_responses_extract_in_near_linear_time(response):
    start = time.perf_counter()
    for mode in ("boxed", "boxes", "gsm8k", "auto"):
        assert extract_answer(response, mode) is None or isinstance(extract_answer(response, mode), str)
    assert time.perf_counter() - start < SLACK_S  # a guarantee (RL never stalls), not a speed target


def test_the_bound_holds_on_and_off_the_main_thread():
    start = time.perf_counter()
    assert call_bounded(time.sleep, (30,), timeout=0.5, default="late") == "late"
    assert time.perf_counter() - start < 0.5 + SLACK_S  # the guarantee, not a speed target

    results = []

    def worker():
        t = time.perf_counter()
        late = call_bounded(time.sleep, (30,), timeout=0.5, default="late")
        results.append((late, time.perf_counter() - t))
        results.append((call_bounded(pow, (2, 10), timeout=2.0, default=None), 0.0))

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join(timeout=150)
    assert results[0][0] == "late" and results[0][1] < 0.5 + SLACK_S  # the helper is killed at the bound
    assert results[1][0] == 1024  # and a fresh one serves the next call
    assert answers_match("\\sqrt{8}", "2\\sqrt{2}")  # the main-thread path still works


def test_answers_match_off_the_main_thread_agrees():
    out = {}
    thread = threading.Thread(target=lambda: out.update(
        yes=answers_match("x^2+2x+1", "(x+1)^2"), no=answers_match("x^2+1", "(x+1)^2")))
    thread.start()
    thread.join(timeout=150)
    assert out == {"yes": True, "no": False}


_TOKENS = ["1", "2", "0", "-", "+", "*", "/", "^", "(", ")", "{", "}", "[", "]", ",", "x", "y", "e",
           "\\frac", "\\sqrt", "\\pi", "\\infty", "\\cdot", "!", "=", "\\{", "\\}", "\\cup", ".", " ",
           "\\text", "\\boxed", "%", "^\\circ", "10^{", "9", "\\sin", "\\log", "_", "|", "&", "\\\\",
           "\\le", "<", ">", "\\pm", " and ", "\\approx", "\\in", ";", "\\begin{pmatrix}", "\\end{pmatrix}",
           "$", "\\(", "\\)", ",\\!", "0.3333333", "\\sec^2"]


@settings(max_examples=2000, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.sampled_from(_TOKENS), max_size=25).map("".join),
       st.lists(st.sampled_from(_TOKENS), max_size=25).map("".join))
def test_fuzz_latex_soup_never_raises_and_stays_bounded(pred, gold):
    start = time.perf_counter()
    assert answers_match(pred, gold, timeout=1.0) in (True, False)
    assert grade(pred, gold) in (True, False)
    assert time.perf_counter() - start < 1.0 + 2.0 + SLACK_S  # both calls' bounds: the guarantee


@settings(max_examples=1000, deadline=None)
@given(st.text(max_size=60), st.text(max_size=60))
def test_fuzz_any_text_never_raises(pred, gold):
    assert answers_match(pred, gold, timeout=1.0) in (True, False)
    assert extract_answer(pred, "auto") is None or isinstance(extract_answer(pred, "auto"), str)


def test_the_grading_pool_keeps_order_and_agrees_with_sequential(data_dir):
    rows = _grader_cases(data_dir)[:1200]
    requests = [GradeRequest(gold=r["gold_answer"], answer=r["model_answer"]) for r in rows]
    pooled = Grader(processes=2).grade_requests(requests)
    assert pooled == Grader(processes=0).grade_requests(requests)
    assert [r.correct for r in pooled] == [answers_match(r["model_answer"], r["gold_answer"]) for r in rows]


# Two equal sets of 108 expressions in opposite orders: matching them compares pairs symbolically,
# about 2.3 s on this machine; under a 0.2 s bound it runs out of time every time.
SLOW = ("\\{" + ",".join(f"{i}x+{i}" for i in range(1, 110)) + "\\}",
        "\\{" + ",".join(f"{i}(x+1)" for i in reversed(range(1, 110))) + "\\}")


def _timed_grades(processes):
    grader = Grader(timeout=0.2, processes=processes)
    problem = Problem("p", "?", SLOW[1])
    return grader.grade(problem, [f"\\boxed{{{SLOW[0]}}}", f"\\boxed{{{SLOW[1]}}}", "no boxed answer"])


@pytest.mark.parametrize("processes", [0, 2])
def test_a_comparison_out_of_time_is_a_timeout_not_a_wrong_answer_from_any_thread(processes):
    results = {}
    thread = threading.Thread(target=lambda: results.update(thread=_timed_grades(processes)))
    thread.start()
    thread.join(timeout=120)
    results["main"] = _timed_grades(processes)
    for where, graded in results.items():
        assert [g.timed_out for g in graded] == [True, False, False], where
        assert [g.correct for g in graded] == [False, True, False], where  # equal strings need no sympy


# ---- the command line -----------------------------------------------------------------------------

def _mathrl(*args):
    return subprocess.run([sys.executable, "-m", "mathrl.cli", *args], capture_output=True, text=True,
                          timeout=300)


def test_grade_cli_adds_extracted_and_correct(tmp_path):
    rows = [{"gold": "5", "response": "<think>..</think> so \\boxed{5}", "id": 1},
            {"gold": "1,000", "answer": "1000"},
            {"gold": "7", "response": "A: 8"},
            {"gold": "3", "tolerance": 0.1, "answer": "3.05"}]
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = _mathrl("grade", str(path), "--out", str(tmp_path / "out.jsonl"))
    assert out.returncode == 0, out.stderr
    graded = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [(g["extracted"], g["correct"]) for g in graded] == [
        ("5", True), ("1000", True), ("8", False), ("3.05", True)]
    assert graded[0]["id"] == 1 and "graded 4: 3 correct" in out.stderr
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("bad, message", [
    ("{not json", "in.jsonl:2: invalid JSON"),
    ('{"response": "\\\\boxed{1}"}', "in.jsonl:2: field 'gold' is missing"),
    ('{"gold": "1"}', "in.jsonl:2: field 'response' (or 'answer') is missing"),
])
def test_grade_cli_names_the_bad_line(tmp_path, bad, message):
    path = tmp_path / "in.jsonl"
    path.write_text('{"gold": "1", "answer": "1"}\n' + bad + "\n")
    out = _mathrl("grade", str(path))
    assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr


# ---- breadth: the answer shapes of other datasets and graders ---------------------------------

@pytest.mark.parametrize("kind, response, gold, expected", BREADTH,
                         ids=[f"{k}-{i}" for i, (k, *_) in enumerate(BREADTH)])
def test_breadth(kind, response, gold, expected):
    assert grade(response, gold, extract="auto") is expected


def test_rounding_policy_is_an_option():
    # approx_digits=None compares exactly; a lower floor accepts coarser decimals.
    assert answers_match("0.0833333", "\\frac{1}{12}")
    assert not answers_match("0.0833333", "\\frac{1}{12}", approx_digits=None)
    assert not answers_match("0.33", "\\frac{1}{3}")
    assert answers_match("0.33", "\\frac{1}{3}", approx_digits=2)
    assert not answers_match("1.41421", "\\sqrt{2}", approx_digits=None)


@pytest.mark.parametrize("response, mode, expected", [
    ("\\boxed{1} and \\boxed{2}", "boxed", "2"),
    ("\\boxed{1} and \\boxed{2}", "boxes", "1, 2"),
    ("\\boxed{1}. Then we find \\boxed{2}", "boxes", "2"),
    ("\\boxed{(1, 2)}, \\boxed{(2, 1)}, \\boxed{(1, 2)}", "boxes", "(1, 2), (2, 1)"),
    ("no box", "boxes", None),
    ("The answer is:\n\n\\[ \\boxed{7} \\]", "auto", "7"),
    ("Final Answer: The final answer is $28 \\%$. I hope it is correct. Note: $5$", "auto", "28 \\%"),
    ("Answer $ \\frac{1}{2} \\$ = \\frac{10}{9} $", "auto", "\\frac{1}{2} \\$ = \\frac{10}{9}"),
    ("-\\frac{10}{9}", "auto", "-\\frac{10}{9}"),
])
def test_group_and_statement_extraction(response, mode, expected):
    assert extract_answer(response, mode) == expected


def test_grade_cli_rounding_and_box_groups(tmp_path):
    rows = [{"gold": "\\frac{1}{12}", "answer": "0.0833333"},
            {"gold": "(2, 2), (6, 2)", "response": "\\boxed{(2, 2)} \\text{ and } \\boxed{(6, 2)}"}]
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    verdicts = {}
    for flags in ([], ["--approx-digits", "exact", "--extract", "boxed"]):
        out = _mathrl("grade", str(path), *flags)
        assert out.returncode == 0, out.stderr
        verdicts[tuple(flags)] = [json.loads(line)["correct"] for line in out.stdout.splitlines()]
    assert verdicts[()] == [True, True]
    assert verdicts[("--approx-digits", "exact", "--extract", "boxed")] == [False, False]
    assert _mathrl("grade", str(path), "--approx-digits", "0").returncode == 2


def test_cli_spells_the_graders_constants():
    # mathrl grade names them without importing the grader (and sympy) when the CLI is built.
    from mathrl.commands import grade as grade_command
    from mathrl.grading import DEFAULT_APPROX_DIGITS, EXTRACT_MODES

    assert grade_command.EXTRACT_MODES == EXTRACT_MODES
    assert grade_command.DEFAULT_APPROX_DIGITS == DEFAULT_APPROX_DIGITS
