"""In-process Hugging Face sampler: batched, left-padded, KV-cached decoding with logprobs."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence

import torch
from transformers import DynamicCache, PreTrainedModel
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from mathrl.sampling import Prompt, SamplingParams, encode_prompt
from mathrl.types import Completion


class HFSampler:
    """Samples a transformers causal LM in this process with its own KV-cached decode loop.

    Each prompt is prefilled once and its cache repeated for its ``n`` samples; rows that have
    stopped leave the batch, so the cost follows the live rows, not the longest one.
    ``batch_size`` counts sequences (prompts x n) decoded together. Logprobs are those of the
    distribution each token was drawn from (after temperature, top-k, top-p); for greedy
    decoding they are the model's own (temperature 1) logprobs.

    Each row's random numbers are a function of the seed, its prompt's tokens and its sample
    index (:func:`row_seeds`), drawn by a counter-based hash rather than one generator shared by
    the batch: a prompt's samples do not depend on what it is batched with, on ``batch_size``,
    or on which process samples it, so a run split over several processes samples exactly what
    one process would.
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
        return encode_prompt(self.tokenizer, prompt, params.enable_thinking)

    def sample(self, prompts: Sequence[Prompt], n: int,
               params: SamplingParams) -> list[list[Completion]]:
        encoded = [self.encode(p, params) for p in prompts]
        if params.greedy and n > 1:
            # Greedy samples are all the same sequence: decode it once.
            return [group * n for group in self.sample(encoded, 1, params)]
        # Unseeded calls draw their seed from torch's global RNG: reproducible under seed_everything.
        seed = params.seed if params.seed is not None else int(torch.randint(0, 2**62, (1,)).item())
        seeds = row_seeds(seed, encoded, n)
        per_batch = max(1, self.batch_size // n)
        out: list[list[Completion]] = []
        for start in range(0, len(encoded), per_batch):
            out.extend(self._sample_batch(encoded[start:start + per_batch], n, params,
                                          seeds[start * n:(start + per_batch) * n]))
        return out

    @torch.inference_mode()
    def _sample_batch(self, prompt_ids: list[list[int]], n: int, params: SamplingParams,
                      seeds: list[int]) -> list[list[Completion]]:
        device, pad = self.device, self.tokenizer.pad_token_id
        width = max(len(p) for p in prompt_ids)
        input_ids_B_P = torch.tensor([[pad] * (width - len(p)) + p for p in prompt_ids], device=device)
        attention_B_P = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompt_ids],
                                     device=device)
        positions_B_P = (attention_B_P.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache(config=self.model.config)
        out = self.model(input_ids=input_ids_B_P, attention_mask=attention_B_P, position_ids=positions_B_P,
                         past_key_values=cache, use_cache=True, logits_to_keep=1)
        logits_S_V = out.logits[:, -1].float()
        if n > 1:  # prefill once, then one cache row per sample: S = B x n, grouped by prompt
            cache.batch_repeat_interleave(n)
            logits_S_V = logits_S_V.repeat_interleave(n, 0)
            attention_B_P = attention_B_P.repeat_interleave(n, 0)
            positions_B_P = positions_B_P.repeat_interleave(n, 0)
        n_rows, max_new = logits_S_V.shape[0], params.max_tokens
        # Preallocated: the mask grows by slicing, tokens and logprobs are written by row index.
        attention_S_T = torch.cat([attention_B_P, attention_B_P.new_ones(n_rows, max_new)], dim=-1)
        tokens_S_T = torch.full((n_rows, max_new), -1, dtype=torch.long, device=device)
        logprobs_S_T = torch.zeros((n_rows, max_new), device=device)
        next_position_S = positions_B_P[:, -1] + 1
        live_S = torch.arange(n_rows, device=device)  # original row of each live row
        # Each row's 64-bit seed as two 32-bit halves (int64 tensors: the hash stays in range).
        seed_lo_S = torch.tensor([s & _M32 for s in seeds], device=device)
        seed_hi_S = torch.tensor([s >> 32 for s in seeds], device=device)
        stop_ids = torch.tensor(self._stop_ids(params), device=device, dtype=torch.long)
        for step in range(max_new):
            uniform_S = _uniform(seed_lo_S[live_S], seed_hi_S[live_S], step)
            token_S, logprob_S = _draw(logits_S_V, params, uniform_S)
            tokens_S_T[live_S, step] = token_S
            logprobs_S_T[live_S, step] = logprob_S
            done_S = torch.isin(token_S, stop_ids)
            if params.stop:
                hits = [self._hit_stop_string(tokens_S_T[r, :step + 1].tolist(), params.stop)
                        for r in live_S.tolist()]
                done_S |= torch.tensor(hits, device=device)
            if step == max_new - 1:
                break
            if done_S.any():
                keep = (~done_S).nonzero().squeeze(-1)
                if keep.numel() == 0:
                    break
                cache.batch_select_indices(keep)
                live_S, token_S = live_S[keep], token_S[keep]
                attention_S_T, next_position_S = attention_S_T[keep], next_position_S[keep]
            out = self.model(input_ids=token_S[:, None], attention_mask=attention_S_T[:, :width + step + 1],
                             position_ids=next_position_S[:, None], past_key_values=cache, use_cache=True,
                             logits_to_keep=1)
            logits_S_V = out.logits[:, -1].float()
            next_position_S = next_position_S + 1
        completions = []
        for r, (row_tokens, row_logprobs) in enumerate(zip(tokens_S_T.tolist(), logprobs_S_T.tolist(),
                                                           strict=True)):
            length = row_tokens.index(-1) if -1 in row_tokens else max_new
            completions.append(self._completion(row_tokens[:length], row_logprobs[:length],
                                                len(prompt_ids[r // n]), params))
        return [completions[i * n:(i + 1) * n] for i in range(len(prompt_ids))]

    def _stop_ids(self, params: SamplingParams) -> list[int]:
        return ([] if params.ignore_eos else list(self.stop_ids)) + list(params.stop_token_ids)

    def _hit_stop_string(self, ids: list[int], stops: tuple[str, ...]) -> bool:
        tail = self.tokenizer.decode(ids[-16:], skip_special_tokens=True)
        return any(stop in tail for stop in stops)

    def _completion(self, ids: list[int], logprobs: list[float], prompt_n_tokens: int,
                    params: SamplingParams) -> Completion:
        finish = "stop" if ids and ids[-1] in self._stop_ids(params) else "length"
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        for stop in params.stop:
            cut = text.find(stop)
            if cut >= 0:
                text, finish = text[:cut], "stop"
        return Completion(
            token_ids=tuple(ids), logprobs=tuple(logprobs), text=text, finish_reason=finish,
            n_thinking_tokens=count_thinking_tokens(ids, self.think_open_id, self.think_close_id),
            prompt_n_tokens=prompt_n_tokens)


def row_seeds(seed: int, prompts: Sequence[Sequence[int]], n: int) -> list[int]:
    """A 64-bit seed per row (prompt i's sample j at ``i * n + j``): a hash of the call's seed,
    the prompt's tokens and the sample's index among that prompt's samples in the call, so a
    prompt given twice with ``n`` samples draws what it draws given once with ``2 n``."""
    seen: Counter = Counter()
    out = []
    for ids in prompts:
        key = tuple(ids)
        first, seen[key] = seen[key], seen[key] + n
        prefix = hashlib.blake2b(f"{seed}/0/".encode() + repr(key).encode(), digest_size=16)
        for j in range(first, first + n):
            digest = prefix.copy()
            digest.update(f"/{j}".encode())
            out.append(int.from_bytes(digest.digest()[:8], "little"))
    return out


_M32 = 0xFFFFFFFF


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """``x * c mod 2**32`` for ``0 <= x, c < 2**32`` in int64 without overflow (16-bit halves)."""
    return ((x & 0xFFFF) * c + ((((x >> 16) * c) & 0xFFFF) << 16)) & _M32


def _hash32(x: torch.Tensor) -> torch.Tensor:
    """lowbias32 (C. Wellons): a 32-bit integer hash with full avalanche."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def _uniform(seed_lo_S: torch.Tensor, seed_hi_S: torch.Tensor, step: int) -> torch.Tensor:
    """One uniform in [0, 1) per row for decode step ``step``, 53 bits from two hashes of
    (row seed, step): counter-based, so a row's draws never depend on the other rows."""
    a = _hash32(seed_lo_S ^ _hash32(seed_hi_S ^ (2 * step)))
    b = _hash32(seed_hi_S ^ _hash32(seed_lo_S ^ (2 * step + 1)))
    return ((a >> 6) * 2**27 + (b >> 5)).double() / 2**53


def _draw(logits_S_V: torch.Tensor, params: SamplingParams,
          uniform_S: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One token per row and its logprob under the distribution it was drawn from (inverse CDF
    at the row's own uniform)."""
    if params.greedy:
        token_S = logits_S_V.argmax(-1)
        return token_S, torch.log_softmax(logits_S_V, -1).gather(-1, token_S[:, None])[:, 0]
    scores_S_V = logits_S_V / params.temperature
    if params.top_k:
        kth = scores_S_V.topk(min(params.top_k, scores_S_V.shape[-1]), dim=-1).values[:, -1:]
        scores_S_V = scores_S_V.masked_fill(scores_S_V < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_S_V, order_S_V = scores_S_V.sort(dim=-1, descending=True)
        cumulative = sorted_S_V.softmax(-1).cumsum(-1)
        drop = cumulative - sorted_S_V.softmax(-1) >= params.top_p  # keep the token that crosses p
        scores_S_V = scores_S_V.masked_fill(drop.scatter(-1, order_S_V, drop), float("-inf"))
    logprobs_S_V = torch.log_softmax(scores_S_V, -1)
    cdf_S_V = logprobs_S_V.exp().double().cumsum(-1)  # fp64: exact enough over a 152k vocabulary
    # The first token whose CDF passes u (a token of probability 0 never does).
    token_S = torch.searchsorted(cdf_S_V, (uniform_S * cdf_S_V[:, -1])[:, None], right=True)[:, 0]
    token_S = token_S.clamp(max=cdf_S_V.shape[-1] - 1)
    return token_S, logprobs_S_V.gather(-1, token_S[:, None])[:, 0]


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
