"""Prompt construction: problem -> chat messages. The chat template turns messages into ids."""

from __future__ import annotations

from mathrl.types import Problem

# The system prompt of the Qwen math models and of the reference studies' protocol.
SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."

# One worked example as a user/assistant exchange, placed before the problem (the studies'
# few-shot protocol). Written for mathrl; short, so it costs little context.
FEW_SHOT_MATH = (
    "What is the remainder when $2^{10}$ is divided by $7$?",
    "Since $2^3 = 8 \\equiv 1 \\pmod{7}$, we have $2^{10} = (2^3)^3 \\cdot 2 \\equiv 1^3 \\cdot 2 = 2 "
    "\\pmod{7}$. The answer is $\\boxed{2}$.",
)
# The synthetic task's own format: the embedded model has seen exchanges like this one.
FEW_SHOT_ARITH = (
    "Compute $(12 + 7) \\times 3$.",
    "<think>\n12 + 7 = 19\n19 * 3 = 57\n</think>\n\nThe answer is $\\boxed{57}$.",
)


def few_shot_for(benchmark: str) -> tuple[str, str]:
    """The worked example for a benchmark: arith's own format for arith, else the MATH one."""
    return FEW_SHOT_ARITH if benchmark.startswith("arith") else FEW_SHOT_MATH


def problem_messages(problem: Problem, system_prompt: str | None = SYSTEM_PROMPT,
                     answer: str | None = None,
                     few_shot: tuple[str, str] | None = None) -> list[dict[str, str]]:
    """Chat messages asking ``problem``, after an optional worked example; with ``answer``, the
    assistant turn is appended (training documents)."""
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    if few_shot is not None:
        messages += [{"role": "user", "content": few_shot[0]},
                     {"role": "assistant", "content": few_shot[1]}]
    messages.append({"role": "user", "content": problem.problem})
    if answer is not None:
        messages.append({"role": "assistant", "content": answer})
    return messages
