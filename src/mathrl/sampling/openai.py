"""OpenAI-compatible HTTP sampler (vLLM, SGLang, ``mathrl serve``, hosted APIs).

Chat prompts go to ``/v1/chat/completions``, token-id prompts to ``/v1/completions``. Requests
run concurrently up to a limit; 429, 5xx, timeouts and connection errors are retried with
exponential backoff; other errors are reported at once with the server's message. Logprobs and
token ids are used when the server returns them (``mathrl serve`` and vLLM return both).
"""

from __future__ import annotations

import json
import random
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from http.client import HTTPException

from mathrl.errors import UserError
from mathrl.sampling import Prompt, SamplingParams
from mathrl.types import Completion

RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class SamplerError(UserError):
    """The server could not give an answer, after retries where retrying made sense."""


class OpenAISampler:
    def __init__(self, base_url: str, model: str, api_key: str | None = None,
                 concurrency: int = 16, timeout_s: float = 600.0, max_retries: int = 6,
                 backoff_s: float = 0.5, request_token_ids: bool = True):
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key = api_key
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        # vLLM and mathrl serve return token ids on request; hosted APIs may reject the field.
        self.request_token_ids = request_token_ids

    def sample(self, prompts: Sequence[Prompt], n: int, params: SamplingParams) -> list[list[Completion]]:
        with ThreadPoolExecutor(max_workers=min(self.concurrency, max(1, len(prompts)))) as pool:
            return list(pool.map(lambda p: self._one(p, n, params), prompts))

    def _one(self, prompt: Prompt, n: int, params: SamplingParams) -> list[Completion]:
        chat = not (prompt and isinstance(prompt[0], int))
        body = {"model": self.model, "n": n, "max_tokens": params.max_tokens,
                "temperature": 0.0 if params.greedy else params.temperature, "top_p": params.top_p,
                "logprobs": True if chat else 1}
        if self.request_token_ids:
            body["return_token_ids"] = True
        if chat:
            body["messages"] = list(prompt)
            if not params.enable_thinking:
                body["chat_template_kwargs"] = {"enable_thinking": False}
        else:
            body["prompt"] = list(prompt)
        if params.top_k:
            body["top_k"] = params.top_k
        if params.stop:
            body["stop"] = list(params.stop)
        if params.seed is not None:
            body["seed"] = params.seed
        if params.ignore_eos:
            body["ignore_eos"] = True  # vLLM's and mathrl serve's extra parameter
        reply = self._post("/chat/completions" if chat else "/completions", body)
        return [_completion(choice, chat) for choice in sorted(reply["choices"], key=lambda c: c["index"])]

    def served_models(self) -> list[str]:
        """Ids the server lists at ``/models`` (to name the model when the user gave only a URL)."""
        return [m["id"] for m in self._post("/models", None).get("data", [])]

    def post_root(self, path: str, body: dict) -> dict:
        """POST to a path at the server's root, not under ``/v1``: the control endpoints of vLLM
        and ``mathrl serve`` (``/v1/load_lora_adapter``, ``/sleep``, ``/reset_prefix_cache``)."""
        root = self.base_url[:-len("/v1")] if self.base_url.endswith("/v1") else self.base_url
        return self._post(path, body, root)

    def _post(self, path: str, body: dict | None, root: str | None = None) -> dict:
        """POST ``body`` as JSON (or GET when ``body`` is None), with retries."""
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        url = (root or self.base_url) + path
        for attempt in range(self.max_retries + 1):
            try:
                request = urllib.request.Request(url, data=data, headers=headers,
                                                 method="POST" if data is not None else "GET")
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    raw = response.read()
                    try:
                        return json.loads(raw)
                    except json.JSONDecodeError:  # vLLM answers some control calls in plain text
                        return {"text": raw.decode("utf-8", "replace")}
            except urllib.error.HTTPError as err:
                detail = err.read().decode("utf-8", "replace")[:500]
                if err.code not in RETRY_STATUS or attempt == self.max_retries:
                    raise SamplerError(f"{url}: HTTP {err.code}: {detail}") from None
            except (TimeoutError, urllib.error.URLError, ConnectionError, HTTPException) as err:
                if attempt == self.max_retries:
                    raise SamplerError(f"{url}: {err} (after {self.max_retries} retries)") from None
            time.sleep(self.backoff_s * 2 ** attempt * (0.5 + random.random()))
        raise AssertionError("unreachable")


def _completion(choice: dict, chat: bool) -> Completion:
    if chat:
        message = choice.get("message") or {}
        text = message.get("content") or ""
        reasoning = message.get("reasoning_content") or message.get("reasoning")
        if reasoning:  # servers with a reasoning parser split the thought out: put it back
            text = f"<think>\n{reasoning}\n</think>\n\n{text}"
        entries = ((choice.get("logprobs") or {}).get("content")) or []
        tokens = [e.get("token", "") for e in entries]
        logprobs = [float(e["logprob"]) for e in entries]
    else:
        text = choice.get("text") or ""
        lp = choice.get("logprobs") or {}
        tokens = lp.get("tokens") or []
        logprobs = [float(x) for x in lp.get("token_logprobs") or []]
    token_ids = tuple(choice.get("token_ids") or ())
    finish = "length" if choice.get("finish_reason") == "length" else "stop"
    return Completion(token_ids=token_ids, logprobs=tuple(logprobs), text=text, finish_reason=finish,
                      n_thinking_tokens=_thinking_from_strings(tokens),
                      n_tokens=len(token_ids) or len(logprobs))


def _thinking_from_strings(tokens: list[str]) -> int:
    """Thinking tokens counted on the token strings a server returned with the logprobs."""
    stripped = [t.strip() for t in tokens]
    if "<think>" not in stripped and "</think>" not in stripped:
        return 0
    start = stripped.index("<think>") + 1 if "<think>" in stripped else 0
    end = stripped.index("</think>") if "</think>" in stripped[start:] else len(stripped)
    return max(0, end - start)
