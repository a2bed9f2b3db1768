"""The core of the one grader: final-answer extraction and numeric equality."""

import pytest

from mathrl.grading import answers_match, extract_boxed_answer, grade, last_boxed, strip_thinking


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
    assert extract_boxed_answer("<think>\n2 + 2 = 4, \\boxed{4}\n</think>\n\nDone.") is None
    # Output cut off inside the thought has no final answer, whatever it contains.
    assert extract_boxed_answer("<think>\n2 + 2 = \\boxed{4}") is None
    assert extract_boxed_answer("no thinking, \\boxed{9}") == "9"


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
