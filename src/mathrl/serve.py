"""``mathrl serve``: an OpenAI-compatible HTTP server over any in-process sampler.

Enough of the API for the HTTP sampler, vLLM-style clients, the official ``openai`` client and
teachers: ``POST /v1/chat/completions`` and ``/v1/completions`` (``n``, ``temperature``,
``top_p``, ``top_k``, ``max_tokens``, ``stop``, ``seed``, ``logprobs``, ``stream``), ``GET
/v1/models`` and ``/health``. Each choice also carries ``token_ids`` (as vLLM's
``return_token_ids``). Every field is checked: a bad one is a 400 that names it, and ``n``,
``max_tokens`` and the prompt's length are bounded (:class:`Limits`). ``stream: true`` answers in
server-sent events; the text comes as one chunk per choice once decoding is done.

Concurrent requests with the same sampling parameters are decoded together: one worker takes
the oldest request and every waiting request with equal parameters (up to ``max_batch``
prompts) into one sampler call. As with vLLM, a seeded request's samples then depend on what it
was batched with; a client that sends one request at a time always gets the same answer.
"""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from concurrent.futures import Future
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from mathrl.sampling import Sampler, SamplingParams


class _BadRequest(Exception):
    pass


@dataclass(frozen=True)
class Limits:
    """What one request may ask of the server: a request past these gets a 400 naming the field,
    so no client can ask for more memory than the machine has."""

    max_n: int = 64
    max_tokens: int = 8192
    max_prompt_tokens: int = 8192


def _field(body: dict, name: str, kind, default=None, low=None, high=None, low_open=False):
    """``body[name]`` checked against a JSON type and a range; a 400 naming the field otherwise."""
    value = body.get(name, default)
    if value is None:
        return default
    ok = isinstance(value, kind) and not (isinstance(value, bool) and kind is not bool)
    if not ok:
        expected = {int: "an integer", float: "a number", bool: "true or false", str: "a string",
                    list: "a list", dict: "an object"}.get(kind, "a number")
        raise _BadRequest(f"'{name}' must be {expected}, got {json.dumps(value)[:40]}")
    too_low = low is not None and (value <= low if low_open else value < low)
    if too_low or (high is not None and value > high):
        bounds = f"{'>' if low_open else '>='} {low}" if high is None else (
            f"in ({low}, {high}]" if low_open else f"in [{low}, {high}]")
        raise _BadRequest(f"'{name}' must be {bounds}, got {value}")
    return value


def _params(body: dict, limits: Limits) -> tuple[int, SamplingParams]:
    """``n`` and the sampling parameters of a request, every field checked."""
    number = (int, float)
    max_tokens = _field(body, "max_tokens", int, None, 1, limits.max_tokens)
    if max_tokens is None:
        max_tokens = _field(body, "max_completion_tokens", int, 256, 1, limits.max_tokens)
    stop = body.get("stop") or []
    if isinstance(stop, str):
        stop = (stop,)
    elif not (isinstance(stop, list) and all(isinstance(x, str) and x for x in stop)):
        raise _BadRequest("'stop' must be a string or a list of non-empty strings")
    kwargs = _field(body, "chat_template_kwargs", dict, {})
    top_k = _field(body, "top_k", int, 0, -1)
    n = _field(body, "n", int, 1, 1, limits.max_n)
    _field(body, "stream", bool, False)
    return n, SamplingParams(
        temperature=float(_field(body, "temperature", number, 1.0, 0.0, 2.0)),
        top_p=float(_field(body, "top_p", number, 1.0, 0.0, 1.0, low_open=True)),
        top_k=max(0, top_k),  # vLLM's -1 means no top-k, as 0 does here
        max_tokens=max_tokens, stop=tuple(stop), seed=_field(body, "seed", int),
        enable_thinking=bool(kwargs.get("enable_thinking", True)))


def _prompt(path: str, body: dict, tokenizer, limits: Limits) -> list[int]:
    """The request's prompt as token ids (a chat rendered by the template), every field checked."""
    if path == "/v1/chat/completions":
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise _BadRequest("'messages' must be a non-empty list of {role, content} objects")
        for i, m in enumerate(messages):
            if not (isinstance(m, dict) and m.get("role") in ("system", "user", "assistant")
                    and isinstance(m.get("content"), str)):
                raise _BadRequest(f"'messages[{i}]' must be an object with a role (system, user or "
                                  "assistant) and a string content")
        kwargs = body.get("chat_template_kwargs") or {}
        # Rendered here, once: its length is checked, and the sampler takes the ids as they are.
        prompt = list(tokenizer.apply_chat_template(
            [{"role": m["role"], "content": m["content"]} for m in messages], add_generation_prompt=True,
            tokenize=True, return_dict=False, enable_thinking=bool(kwargs.get("enable_thinking", True))))
    else:
        prompt = body.get("prompt")
        if isinstance(prompt, str) and prompt:
            prompt = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        vocab = len(tokenizer)
        if not (isinstance(prompt, list) and prompt
                and all(isinstance(t, int) and not isinstance(t, bool) and 0 <= t < vocab for t in prompt)):
            raise _BadRequest(f"'prompt' must be a non-empty string or a list of token ids in [0, {vocab})")
    if len(prompt) > limits.max_prompt_tokens:
        field = "messages" if path == "/v1/chat/completions" else "prompt"
        raise _BadRequest(f"'{field}' is {len(prompt)} tokens, more than this server's limit of "
                          f"{limits.max_prompt_tokens}")
    return prompt


class Batcher:
    """Runs sampler calls on one worker thread, merging waiting requests with equal parameters."""

    def __init__(self, sampler: Sampler, max_batch: int = 64, wait_s: float = 0.005):
        self.sampler, self.max_batch, self.wait_s = sampler, max_batch, wait_s
        self._queue: queue.Queue = queue.Queue()
        threading.Thread(target=self._work, daemon=True).start()

    def submit(self, prompt, n: int, params: SamplingParams) -> list:
        future: Future = Future()
        self._queue.put((prompt, n, params, future))
        return future.result()

    def _work(self) -> None:
        held: list = []
        while True:
            first = held.pop(0) if held else self._queue.get()
            batch, deadline = [first], time.monotonic() + self.wait_s
            while len(batch) < self.max_batch:
                same = next((r for r in held if r[1:3] == first[1:3]), None)
                if same is not None:
                    held.remove(same)
                    batch.append(same)
                    continue
                try:
                    item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                (batch if item[1:3] == first[1:3] else held).append(item)
            try:
                groups = self.sampler.sample([r[0] for r in batch], first[1], first[2])
                for request, group in zip(batch, groups, strict=True):
                    request[3].set_result(group)
            except Exception as err:  # noqa: BLE001 - handed to each waiting request
                for request in batch:
                    request[3].set_exception(err)


def make_server(sampler: Sampler, tokenizer, model_name: str, host: str = "127.0.0.1",
                port: int = 8000, max_batch: int = 64, limits: Limits = Limits()) -> ThreadingHTTPServer:
    batcher = Batcher(sampler, max_batch)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):  # quiet: one line per request is noise in eval logs
            pass

        def _send(self, status: int, payload: dict) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _error(self, status: int, message: str, kind: str = "invalid_request_error") -> None:
            self._send(status, {"error": {"message": message, "type": kind, "code": status}})

        def _stream(self, reply: dict, chat: bool) -> None:
            """The reply as OpenAI server-sent events: one chunk per choice with its whole text
            (decoding is batched, so the text exists only once it is done), then the finish reasons."""
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            kind = "chat.completion.chunk" if chat else "text_completion"
            head = {k: reply[k] for k in ("id", "created", "model")}
            for choice in reply["choices"]:
                delta = ({"delta": {"role": "assistant", "content": choice["message"]["content"]}} if chat
                         else {"text": choice["text"]})
                events = [{**head, "object": kind, "choices": [{"index": choice["index"], **delta,
                                                                "finish_reason": None}]},
                          {**head, "object": kind, "choices": [{"index": choice["index"],
                                                                **({"delta": {}} if chat else {"text": ""}),
                                                                "finish_reason": choice["finish_reason"]}]}]
                for event in events:
                    self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()

        def do_GET(self):
            if self.path.rstrip("/") in ("/health", "/v1/health"):
                self._send(200, {"status": "ok"})
            elif self.path.rstrip("/") == "/v1/models":
                self._send(200, {"object": "list", "data": [{"id": model_name, "object": "model"}]})
            else:
                self._error(404, f"no route {self.path}")

        def do_POST(self):
            if self.path not in ("/v1/chat/completions", "/v1/completions"):
                self._error(404, f"no route {self.path}")
                return
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                if not isinstance(body, dict):
                    raise _BadRequest("the body must be a JSON object")
                chat = self.path == "/v1/chat/completions"
                prompt = _prompt(self.path, body, tokenizer, limits)
                n, params = _params(body, limits)
            except _BadRequest as err:
                self._error(400, str(err))
                return
            except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
                self._error(400, "the body is not JSON")
                return
            try:
                completions = batcher.submit(prompt, n, params)
            except Exception as err:  # noqa: BLE001 - the server stays up; the client learns why
                self._error(500, f"sampling failed: {type(err).__name__}: {err}", "server_error")
                return
            reply = _reply(completions, chat, model_name, body, tokenizer)
            if body.get("stream"):
                self._stream(reply, chat)
            else:
                self._send(200, reply)

    return ThreadingHTTPServer((host, port), Handler)


def _reply(completions, chat: bool, model_name: str, body: dict, tokenizer) -> dict:
    choices = []
    for i, c in enumerate(completions):
        strings = tokenizer.convert_ids_to_tokens(list(c.token_ids))
        choice = {"index": i, "finish_reason": c.finish_reason, "token_ids": list(c.token_ids)}
        if chat:
            choice["message"] = {"role": "assistant", "content": c.text}
            if body.get("logprobs"):
                choice["logprobs"] = {"content": [{"token": t, "logprob": lp}
                                                  for t, lp in zip(strings, c.logprobs, strict=True)]}
        else:
            choice["text"] = c.text
            if body.get("logprobs"):
                choice["logprobs"] = {"tokens": strings, "token_logprobs": list(c.logprobs)}
        choices.append(choice)
    completion_tokens = sum(c.n_tokens for c in completions)
    prompt_tokens = completions[0].prompt_n_tokens if completions else 0
    return {"id": f"mathrl-{uuid.uuid4().hex[:12]}",
            "object": "chat.completion" if chat else "text_completion",
            "created": int(time.time()), "model": model_name, "choices": choices,
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens}}
