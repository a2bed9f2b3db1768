"""In-process Hugging Face sampler: batched, left-padded, KV-cached decoding with logprobs."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import PreTrainedModel
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from mathrl.sampling import Prompt, SamplingParams
from mathrl.types import Completion


class HFSampler:
    """Samples a transformers causal LM in this process.

    ``batch_size`` counts sequences (prompts x n) decoded together. Logprobs are taken from the
    processed scores (after temperature, top-k, top-p), i.e. under the distribution each token
    was drawn from; for greedy decoding they are the model's own (temperature 1) logprobs.
    """

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                 batch_size: int = 64):
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.stop_ids = _stop_token_ids(model, tokenizer)
        self.think_open_id, self.think_close_id = _think_ids(tokenizer)

    @property
    def device(self) -> torch.device:
        return self.model.device

    def encode(self, prompt: Prompt, params: SamplingParams) -> list[int]:
        if prompt and isinstance(prompt[0], int):
            return list(prompt)
        return list(self.tokenizer.apply_chat_template(
            prompt, add_generation_prompt=True, tokenize=True, return_dict=False,
            enable_thinking=params.enable_thinking))

    def sample(self, prompts: Sequence[Prompt], n: int,
               params: SamplingParams) -> list[list[Completion]]:
        encoded = [self.encode(p, params) for p in prompts]
        if params.greedy and n > 1:
            # Greedy samples are all the same sequence: decode it once.
            return [group * n for group in self.sample(encoded, 1, params)]
        per_batch = max(1, self.batch_size // n)
        if params.seed is not None:
            torch.manual_seed(params.seed)
        out: list[list[Completion]] = []
        for start in range(0, len(encoded), per_batch):
            out.extend(self._sample_batch(encoded[start:start + per_batch], n, params))
        return out

    @torch.inference_mode()
    def _sample_batch(self, prompt_ids: list[list[int]], n: int,
                      params: SamplingParams) -> list[list[Completion]]:
        pad = self.tokenizer.pad_token_id
        width = max(len(p) for p in prompt_ids)
        input_ids_B_P = torch.tensor([[pad] * (width - len(p)) + p for p in prompt_ids])
        attention_B_P = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompt_ids])
        kwargs = dict(
            max_new_tokens=params.max_tokens,
            num_return_sequences=n,
            output_scores=True,
            return_dict_in_generate=True,
            eos_token_id=self.stop_ids,
            pad_token_id=pad,
        )
        if params.greedy:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            kwargs.update(do_sample=True, temperature=params.temperature, top_p=params.top_p,
                          top_k=params.top_k or None)
        if params.stop:
            kwargs.update(stop_strings=list(params.stop), tokenizer=self.tokenizer)
        result = self.model.generate(
            input_ids=input_ids_B_P.to(self.device),
            attention_mask=attention_B_P.to(self.device), **kwargs)
        new_ids_S_T = result.sequences[:, width:].cpu()  # S = prompts x n, rows grouped by prompt
        scores_S_T_V = torch.stack(result.scores, dim=1).float()
        logprobs_S_T = torch.log_softmax(scores_S_T_V, dim=-1).gather(
            -1, new_ids_S_T.to(scores_S_T_V.device).unsqueeze(-1)).squeeze(-1).cpu()
        completions = [self._completion(ids.tolist(), lps.tolist(), len(prompt_ids[s // n]), params)
                       for s, (ids, lps) in enumerate(zip(new_ids_S_T, logprobs_S_T, strict=True))]
        return [completions[i * n:(i + 1) * n] for i in range(len(prompt_ids))]

    def _completion(self, ids: list[int], logprobs: list[float], prompt_n_tokens: int,
                    params: SamplingParams) -> Completion:
        end, finish = len(ids), "length"
        for t, tok in enumerate(ids):
            if tok in self.stop_ids:
                end, finish = t + 1, "stop"
                break
        ids, logprobs = ids[:end], logprobs[:end]
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        for stop in params.stop:
            cut = text.find(stop)
            if cut >= 0:
                text, finish = text[:cut], "stop"
        return Completion(
            token_ids=tuple(ids), logprobs=tuple(logprobs), text=text, finish_reason=finish,
            n_thinking_tokens=count_thinking_tokens(ids, self.think_open_id, self.think_close_id),
            prompt_n_tokens=prompt_n_tokens)


def count_thinking_tokens(ids: Sequence[int], open_id: int | None, close_id: int | None) -> int:
    """Tokens strictly inside the thinking block of a completion.

    Without ``</think>`` (a truncated thought) everything after ``<think>`` counts. Without
    ``<think>`` but with ``</think>`` (templates that put ``<think>`` in the prompt, as Qwen3
    thinking-2507 does) everything before ``</think>`` counts.
    """
    if open_id is None or close_id is None:
        return 0
    ids = list(ids)
    start = ids.index(open_id) + 1 if open_id in ids else None
    end = ids.index(close_id) if close_id in ids else None
    if start is None and end is None:
        return 0
    if start is None:
        return end
    if end is None or end < start:
        return len(ids) - start
    return end - start


def _stop_token_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    ids = {tokenizer.eos_token_id}
    eos = getattr(model.generation_config, "eos_token_id", None)
    ids.update(eos if isinstance(eos, list) else [eos])
    return sorted(i for i in ids if i is not None)


def _think_ids(tokenizer: PreTrainedTokenizerBase) -> tuple[int | None, int | None]:
    vocab = tokenizer.get_vocab()
    return vocab.get("<think>"), vocab.get("</think>")
