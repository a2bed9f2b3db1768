"""``mathrl serve``: an OpenAI-compatible HTTP server over any in-process sampler.

Enough of the API for the HTTP sampler, vLLM-style clients and teachers: ``POST
/v1/chat/completions`` and ``/v1/completions`` (``n``, ``temperature``, ``top_p``, ``top_k``,
``max_tokens``, ``stop``, ``seed``, ``logprobs``), ``GET /v1/models`` and ``/health``. Each
choice also carries ``token_ids`` (as vLLM's ``return_token_ids``).

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
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from mathrl.sampling import Sampler, SamplingParams


class _BadRequest(Exception):
    pass


def _params(body: dict) -> SamplingParams:
    try:
        stop = body.get("stop") or ()
        return SamplingParams(
            temperature=float(body.get("temperature", 1.0)), top_p=float(body.get("top_p", 1.0)),
            top_k=int(body.get("top_k") or 0), max_tokens=int(body.get("max_tokens") or 256),
            stop=(stop,) if isinstance(stop, str) else tuple(stop),
            seed=None if body.get("seed") is None else int(body["seed"]),
            enable_thinking=bool((body.get("chat_template_kwargs") or {}).get("enable_thinking", True)))
    except (TypeError, ValueError) as err:
        raise _BadRequest(f"bad sampling parameter: {err}") from None


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
                port: int = 8000, max_batch: int = 64) -> ThreadingHTTPServer:
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

        def do_GET(self):
            if self.path.rstrip("/") in ("/health", "/v1/health"):
                self._send(200, {"status": "ok"})
            elif self.path.rstrip("/") == "/v1/models":
                self._send(200, {"object": "list", "data": [{"id": model_name, "object": "model"}]})
            else:
                self._send(404, {"error": {"message": f"no route {self.path}"}})

        def do_POST(self):
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                if self.path == "/v1/chat/completions":
                    if not isinstance(body.get("messages"), list):
                        raise _BadRequest("'messages' must be a list")
                    prompt, chat = body["messages"], True
                elif self.path == "/v1/completions":
                    prompt = body.get("prompt")
                    if isinstance(prompt, str):
                        prompt = tokenizer(prompt, add_special_tokens=False)["input_ids"]
                    if not (isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt)):
                        raise _BadRequest("'prompt' must be a string or a list of token ids")
                    chat = False
                else:
                    self._send(404, {"error": {"message": f"no route {self.path}"}})
                    return
                n = int(body.get("n", 1))
                params = _params(body)
                completions = batcher.submit(prompt, n, params)
            except _BadRequest as err:
                self._send(400, {"error": {"message": str(err), "type": "invalid_request_error"}})
                return
            except json.JSONDecodeError:
                self._send(400, {"error": {"message": "body is not JSON", "type": "invalid_request_error"}})
                return
            self._send(200, _reply(completions, chat, model_name, body, tokenizer))

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
