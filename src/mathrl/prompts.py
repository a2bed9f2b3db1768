"""How a problem becomes chat messages: one prompt protocol record, used by every command.

A :class:`PromptProtocol` says everything a prompt depends on: the system prompt (possibly
none), a few-shot exchange by name, a suffix appended to the question, and whether a model
with a thinking mode thinks. ``mathrl eval``, ``distill``, ``rejection-sample``, GRPO's training
prompts and the evaluations of training runs all build their messages through it, and record
it in their config and ``metrics.json``, so ``mathrl report`` can flag runs whose protocols
differ. The chat template then turns the messages into token ids.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

from mathrl.types import Problem

# The system prompt of the Qwen math models; mathrl's default (the studies used none).
SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."

# The Tinker cookbook's question suffixes (recipes/math_rl/math_env.py): MathEnv's, which
# study 1 used for every benchmark, and Gsm8kDataset's, which study 2 used.
TINKER_MATH_SUFFIX = " Write your answer in \\boxed{} format."
TINKER_GSM8K_SUFFIX = " Provide a numerical answer without units, written inside \\boxed{}."

# ``MathEnv.standard_fewshot_prefix()`` of the Tinker cookbook, verbatim: the one worked
# user/assistant exchange study 1 put before every question (its user turn carries MathEnv's
# suffix whatever the benchmark).
FEW_SHOT_TINKER_MATH = (
    "How many r's are in strawberry?" + TINKER_MATH_SUFFIX,
    "Let's spell the word out and number all the letters: 1) s 2) t 3) r 4) a 5) w 6) b 7) e 8) r 9) r "
    "10) y. We have r's at positions 3, 8, and 9. \\boxed{3}",
)
# mathrl's own worked example: a MATH-style one, and for the synthetic task its own format
# (the embedded model has seen exchanges like it).
FEW_SHOT_MATH = (
    "What is the remainder when $2^{10}$ is divided by $7$?",
    "Since $2^3 = 8 \\equiv 1 \\pmod{7}$, we have $2^{10} = (2^3)^3 \\cdot 2 \\equiv 1^3 \\cdot 2 = 2 "
    "\\pmod{7}$. The answer is $\\boxed{2}$.",
)
FEW_SHOT_ARITH = (
    "Compute $(12 + 7) \\times 3$.",
    "<think>\n12 + 7 = 19\n19 * 3 = 57\n</think>\n\nThe answer is $\\boxed{57}$.",
)

FewShot = Literal["none", "tinker_math", "mathrl"]
FEW_SHOTS: tuple[str, ...] = ("none", "tinker_math", "mathrl")


@dataclass(frozen=True)
class PromptProtocol:
    """What a prompt is made of. ``system_prompt=""`` sends no system message; ``few_shot`` names
    an exchange put before the question (``none``; ``tinker_math``, the cookbook's, verbatim;
    ``mathrl``, this project's, arith's own format on arith); ``suffix`` is appended to the
    question text; ``thinking`` is the chat template's ``enable_thinking``.

    >>> PromptProtocol(system_prompt="", suffix=" Go.").messages(Problem("p", "1+1?", "2"))
    [{'role': 'user', 'content': '1+1? Go.'}]
    """

    system_prompt: str = SYSTEM_PROMPT
    few_shot: FewShot = "none"
    suffix: str = ""
    thinking: bool = True

    def __post_init__(self):
        if self.few_shot not in FEW_SHOTS:
            raise ValueError(f"few_shot must be one of {', '.join(FEW_SHOTS)}, got {self.few_shot!r}")

    def messages(self, problem: Problem, dataset: str = "", answer: str | None = None,
                 few_shot: bool = True) -> list[dict[str, str]]:
        """The chat messages asking ``problem`` (of ``dataset``, which picks mathrl's example);
        with ``answer``, the assistant turn is appended (training documents); ``few_shot=False``
        leaves the worked example out (traces keep the question, not the example)."""
        messages = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        example = self.example(dataset) if few_shot else None
        if example is not None:
            messages += [{"role": "user", "content": example[0]},
                         {"role": "assistant", "content": example[1]}]
        messages.append({"role": "user", "content": problem.problem + self.suffix})
        if answer is not None:
            messages.append({"role": "assistant", "content": answer})
        return messages

    def example(self, dataset: str = "") -> tuple[str, str] | None:
        if self.few_shot == "tinker_math":
            return FEW_SHOT_TINKER_MATH
        if self.few_shot == "mathrl":
            return FEW_SHOT_ARITH if dataset.startswith("arith") else FEW_SHOT_MATH
        return None

    def record(self) -> dict:
        """As written into configs and ``metrics.json``."""
        return asdict(self)
