"""Prompt construction: problem -> chat messages. The chat template turns messages into ids."""

from __future__ import annotations

from mathrl.types import Problem

# The system prompt of the Qwen math models and of the reference studies' protocol.
SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."


def problem_messages(problem: Problem, system_prompt: str | None = SYSTEM_PROMPT,
                     answer: str | None = None) -> list[dict[str, str]]:
    """Chat messages asking ``problem``; with ``answer``, the assistant turn is appended."""
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    messages.append({"role": "user", "content": problem.problem})
    if answer is not None:
        messages.append({"role": "assistant", "content": answer})
    return messages
