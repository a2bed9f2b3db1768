"""Sampling behind one narrow interface: ``sample(prompts, n, params) -> completions``.

Nothing outside this package calls ``model.generate``. A prompt is a list of chat messages
(rendered with the model's chat template) or a list of token ids (used as is).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from mathrl.types import Completion

Prompt = list[dict[str, str]] | list[int]

# The studies evaluate at temperature 0.01; at or below this we decode greedily, which is the
# same distribution up to float noise and is deterministic.
GREEDY_TEMPERATURE = 0.01


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 = no top-k filter
    max_tokens: int = 2048
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()  # tokens that end a sample besides the model's own stop tokens
    seed: int | None = None
    enable_thinking: bool = True
    ignore_eos: bool = False  # decode max_tokens whatever the model emits (benchmarks)

    @property
    def greedy(self) -> bool:
        return self.temperature <= GREEDY_TEMPERATURE


def encode_prompt(tokenizer, messages: list[dict[str, str]], enable_thinking: bool = True) -> list[int]:
    """A chat's token ids, rendered by ``tokenizer``'s chat template with the generation prompt.
    Every sampler and the trainer use this one rendering, so the loss scores exactly the tokens
    a sampler saw."""
    return list(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                              return_dict=False, enable_thinking=enable_thinking))


class Sampler(Protocol):
    def sample(self, prompts: Sequence[Prompt], n: int,
               params: SamplingParams) -> list[list[Completion]]:
        """``n`` completions for each prompt, in prompt order: ``result[i][j]`` is sample j of i."""
        ...
