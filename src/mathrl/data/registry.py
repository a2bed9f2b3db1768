"""The named datasets: where each one lives, how its rows map to Problems, how it is graded.

A name resolves to a local JSONL in the data directory (``--data-dir`` / ``MATHRL_DATA_DIR``;
the layout of ../shared/data, see its MANIFEST.md) and, when that file is absent, to the usual
public Hugging Face copy with its field mapping. ``arith`` and ``arith_train`` are generated.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from mathrl.data.rows import FieldMap
from mathrl.grading.extract import last_boxed
from mathrl.tasks import arith
from mathrl.types import Problem


def gsm8k_final_answer(solution: object) -> str | None:
    """GSM8K's gold answer: the text after ``####`` (thousands commas kept, as in the source)."""
    text = str(solution)
    return text.rsplit("####", 1)[1].strip() if "####" in text else None


def math_final_answer(solution: object) -> str | None:
    """MATH has no answer field: the gold answer is the last ``\\boxed{}`` of the solution."""
    return last_boxed(str(solution))


@dataclass(frozen=True)
class HubSource:
    dataset_id: str
    split: str
    fields: FieldMap
    config: str | None = None
    keep: Callable[[dict], bool] | None = None  # row filter, e.g. OlympiadBench numerical only


@dataclass(frozen=True)
class DatasetSpec:
    """One named dataset.

    ``extract`` is how a response's final answer is found for this benchmark (``boxed``, or
    ``auto``: boxed, then GSM8K ``####``, "the answer is", last number). ``levels`` restricts
    the rows (``math_hard``). ``skip_missing_answers`` is for sources documented to have rows
    without a gold answer (MATH: an empty ``\boxed{}``): those rows are skipped and counted;
    any other bad row is an error.
    """

    name: str
    description: str
    kind: str  # "eval" or "train"
    file: str | None = None
    fields: FieldMap = field(default_factory=FieldMap)
    hub: HubSource | None = None
    extract: str = "boxed"
    levels: tuple[int, ...] | None = None
    skip_missing_answers: bool = False
    generate: Callable[[tuple[int, ...] | None, int | None], list[Problem]] | None = None

    @property
    def origin(self) -> str:
        if self.generate is not None:
            return "generated"
        return self.file or f"hf:{self.hub.dataset_id}"


# MATH: two train solutions have an empty \boxed{} (MANIFEST.md), hence skip_missing_answers.
_MATH_HUB = HubSource("DigitalLearningGmbH/MATH-lighteval", "train", FieldMap(
    problem="problem", answer="solution", id=None, level="level", subject="type",
    solution="solution", answer_from=math_final_answer))
_GSM8K_FIELDS = FieldMap(problem="question", answer="answer", id=None, level=None, subject=None,
                         solution="answer", answer_from=gsm8k_final_answer)
_OLYMPIAD_FIELDS = FieldMap(problem="question", answer="final_answer", id="id", level=None,
                            subject="subfield", solution="solution", tolerance="error")
_OLYMPIAD_LOCAL = FieldMap(tolerance="error")
_OLYMPIAD_HUB = HubSource("Hothan/OlympiadBench", "train", _OLYMPIAD_FIELDS, config="OE_TO_maths_en_COMP")


def _arith_test(levels: tuple[int, ...] | None, n: int | None) -> list[Problem]:
    return arith.eval_problems(levels or arith.EVAL_LEVELS, n or arith.EVAL_PROBLEMS)


def _arith_train(levels: tuple[int, ...] | None, n: int | None) -> list[Problem]:
    return arith.generate("train", n or 5000, seed=0, levels=levels or (1, 2, 3, 4, 5))


_SPECS = [
    DatasetSpec("math500", "MATH-500 test problems (Lightman et al.)", "eval", "math500.jsonl",
                hub=HubSource("HuggingFaceH4/MATH-500", "test", FieldMap(id="unique_id"))),
    DatasetSpec("aime2024", "AIME 2024 I and II", "eval", "aime2024.jsonl",
                hub=HubSource("HuggingFaceH4/aime_2024", "train", FieldMap(level=None, subject=None))),
    DatasetSpec("aime2025", "AIME 2025 I and II", "eval", "aime2025.jsonl",
                hub=HubSource("math-ai/aime25", "test", FieldMap(level=None, subject=None, solution=None))),
    DatasetSpec("amc23", "AMC 12 2023, the standard 40-problem subset", "eval", "amc23.jsonl"),
    DatasetSpec("gsm8k", "GSM8K test", "eval", "gsm8k_test.jsonl", extract="auto",
                hub=HubSource("openai/gsm8k", "test", _GSM8K_FIELDS, config="main")),
    DatasetSpec("gsm8k_train", "GSM8K train", "train", "gsm8k_train.jsonl", extract="auto",
                hub=HubSource("openai/gsm8k", "train", _GSM8K_FIELDS, config="main")),
    DatasetSpec("olympiadbench", "OlympiadBench, English text-only open-ended math (OE_TO_maths_en_COMP)",
                "eval", "olympiadbench.jsonl", fields=_OLYMPIAD_LOCAL, hub=_OLYMPIAD_HUB),
    DatasetSpec("olympiadbench_numerical", "OlympiadBench, numerical answers only (572)", "eval",
                "olympiadbench_numerical.jsonl", fields=_OLYMPIAD_LOCAL,
                hub=replace(_OLYMPIAD_HUB, keep=lambda row: row.get("answer_type") == "Numerical")),
    DatasetSpec("minerva", "Minerva OCWCourses (272)", "eval", "minerva_math.jsonl",
                hub=HubSource("math-ai/minervamath", "test", FieldMap(
                    problem="question", id=None, level=None, subject=None, solution=None))),
    DatasetSpec("math_train", "MATH train split (7.5k), answers from the last \\boxed{}", "train",
                "math_train.jsonl", hub=_MATH_HUB, skip_missing_answers=True),
    DatasetSpec("math_hard", "MATH train, levels 4-5 only", "train", "math_train.jsonl",
                hub=_MATH_HUB, levels=(4, 5), skip_missing_answers=True),
    DatasetSpec("math_train_12k", "MATH train + test minus MATH-500 (the PRM800K 12k split)", "train",
                "math_train_12k.jsonl", skip_missing_answers=True),
    DatasetSpec("arith", "synthetic arithmetic, test split (seed 0, levels 1-3, 300)", "eval",
                generate=_arith_test),
    DatasetSpec("arith_train", "synthetic arithmetic, train split (seed 0, levels 1-5, 5000)", "train",
                generate=_arith_train),
]
REGISTRY: dict[str, DatasetSpec] = {spec.name: spec for spec in _SPECS}


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    """Add a named dataset (a benchmark or a training set) to the registry."""
    REGISTRY[spec.name] = spec
    return spec
