"""``mathrl serve``: an OpenAI-compatible HTTP server over any in-process sampler.

Enough of the API for the HTTP sampler, vLLM-style clients, the official ``openai`` client and
teachers: ``POST /v1/chat/completions`` and ``/v1/completions`` (``n``, ``temperature``,
``top_p``, ``top_k``, ``max_tokens``, ``stop``, ``seed``, ``logprobs``, ``stream``), ``GET
/v1/models`` and ``/health``. Each choice also carries ``token_ids`` (as vLLM's
``return_token_ids``). Every field is checked: a bad one is a 400 that names it, and ``n``,
``max_tokens`` and the prompt's length are bounded (:class:`Limits`). ``stream: true`` answers in
server-sent events; the text comes as one chunk per choice once decoding is done.

With ``--enable-lora`` (:class:`Policies`) it speaks vLLM's control API too, so a trainer can
publish its adapter each step and the whole sample -> grade -> train -> publish loop runs on
loopback: ``POST /v1/load_lora_adapter`` (``lora_name``, ``lora_path``, ``load_inplace``) and
``/v1/unload_lora_adapter``; a request whose ``model`` names an adapter samples with it, the base
name samples the base model. ``POST /v1/load_weights`` (``path``: a folder of safetensors)
replaces the base model's weights in place, full fine-tuning's publish. ``POST /sleep``
(sampling answers 503 until ``/wake_up``; on a GPU the weights move to the CPU), ``GET
/is_sleeping`` and ``POST /reset_prefix_cache`` (a no-op: this server keeps no cache between
requests, so no stale entry can be served) complete the set.

Concurrent requests with the same model and sampling parameters are decoded together: one worker takes
the oldest request and every request with equal parameters that is waiting or arrives while
they keep coming (20 ms apart at most, 100 ms in all; up to ``max_batch`` prompts) into one
sampler call. The in-process sampler draws each row's random numbers from its
own seed, prompt and sample index, so a seeded request gets the same samples whatever it is
batched with.
"""

from __future__ import annotations

import contextlib
import json
import queue
import threading
import time
import uuid
from concurrent.futures import Future
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from mathrl.sampling import Sampler, SamplingParams, encode_prompt
from mathrl.watchdog import phase


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


def _required(body: dict, name: str, what: str = "") -> str:
    """``body[name]``, a non-empty string; a 400 naming the field otherwise."""
    value = _field(body, name, str)
    if not value:
        raise _BadRequest(f"'{name}'{what} is required")
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
        enable_thinking=bool(kwargs.get("enable_thinking", True)),
        ignore_eos=_field(body, "ignore_eos", bool, False))  # vLLM's extra parameter (benchmarks)


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
        prompt = encode_prompt(tokenizer, [{"role": m["role"], "content": m["content"]} for m in messages],
                               bool(kwargs.get("enable_thinking", True)))
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


class _NotFound(Exception):
    pass


class _Unavailable(Exception):
    pass


class Policies:
    """The models one server samples: its base model, plus LoRA adapters loaded and replaced at
    run time by name (vLLM's runtime LoRA API), and whether it sleeps.

    Every change and every sampler call holds one lock, so a request never samples a half-loaded
    adapter: a load waits for the batch in flight, and the next batch sees the new weights.
    """

    def __init__(self, sampler: Sampler, base_name: str, enable_lora: bool = False):
        self.sampler, self.base_name, self.enable_lora = sampler, base_name, enable_lora
        self.adapters: dict[str, str] = {}  # name -> the folder it was loaded from
        self.sleeping = False
        self._device = None  # where the weights go back to on wake_up (a GPU's, while asleep)
        self._lock = threading.Lock()

    def names(self) -> list[str]:
        return [self.base_name, *self.adapters]

    def lock(self) -> threading.Lock:
        """Held while the model is used outside :meth:`sample` (scoring a prompt)."""
        return self._lock

    @contextlib.contextmanager
    def active(self, name: str | None):
        """The model with adapter ``name`` active (None: the base model), inside :meth:`lock`."""
        model = self.sampler.model
        if name is None:
            with model.disable_adapter() if self.adapters else contextlib.nullcontext():
                yield model
            return
        if name not in self.adapters:
            raise _NotFound(f"The model `{name}` does not exist (served: {', '.join(self.names())})")
        model.set_adapter(name)
        yield model

    def sample(self, name: str | None, prompts, n: int, params: SamplingParams):
        with self._lock:
            return self._sample(name, prompts, n, params)

    def _sample(self, name: str | None, prompts, n: int, params: SamplingParams):
        """:meth:`sample` with the lock held."""
        if self.sleeping:
            raise _Unavailable("the server is sleeping (POST /wake_up first)")
        if name in (None, self.base_name) or not self.enable_lora:
            if not self.adapters:
                return self.sampler.sample(prompts, n, params)
            with self.sampler.model.disable_adapter():
                return self.sampler.sample(prompts, n, params)
        if name not in self.adapters:
            raise _NotFound(f"The model `{name}` does not exist (served: {', '.join(self.names())})")
        self.sampler.model.set_adapter(name)
        return self.sampler.sample(prompts, n, params)

    def load(self, name: str, path: str, inplace: bool) -> None:
        config = self._adapter_config(name, path)
        with self._lock:
            self._load(name, path, inplace, config)

    def _adapter_config(self, name: str, path: str):
        from peft import PeftConfig

        if not self.enable_lora:
            raise _BadRequest("this server was started without --enable-lora")
        if name == self.base_name:
            raise _BadRequest(f"'lora_name' may not be the base model's name {name!r}")
        try:
            return PeftConfig.from_pretrained(path)
        except (OSError, ValueError) as err:
            raise _BadRequest(f"'lora_path' {path!r} is not a PEFT adapter folder: {err}") from None

    def _load(self, name: str, path: str, inplace: bool, config) -> None:
        """:meth:`load` with the lock held."""
        from peft import PeftModel
        from peft.utils import load_peft_weights, set_peft_model_state_dict

        model = self.sampler.model
        if name in self.adapters and not inplace:
            raise _BadRequest(f"The lora adapter '{name}' has already been loaded "
                              "(set load_inplace to replace its weights)")
        if not self.adapters:
            self.sampler.model = PeftModel.from_pretrained(model, path, adapter_name=name).eval()
        elif name in self.adapters and model.peft_config[name].to_dict() == config.to_dict():
            # Same shape: copy the new weights into the loaded adapter (what a trainer's
            # publish does every step: no new modules, nothing re-wrapped).
            set_peft_model_state_dict(model, load_peft_weights(path, device=str(model.device)),
                                      adapter_name=name)
        else:
            if name in self.adapters:
                model.delete_adapter(name)
            model.load_adapter(path, adapter_name=name)
        self.adapters[name] = path

    def load_weights(self, path: str) -> None:
        """Full fine-tuning's publish: the base model's weights replaced in place from a folder of
        safetensors files (what ``save_pretrained`` writes). mathrl's own endpoint: vLLM has no
        stable one that reloads a whole model from a folder."""
        from pathlib import Path

        from safetensors.torch import load_file

        files = sorted(Path(path).glob("*.safetensors"))
        if not files:
            raise _BadRequest(f"'path' {path!r} holds no .safetensors files")
        with self._lock:
            if self.adapters:
                raise _BadRequest("unload the LoRA adapters before replacing the base model's weights")
            model = self.sampler.model
            state: dict = {}
            for file in files:
                state.update(load_file(file, device=str(model.device)))
            result = model.load_state_dict(state, strict=False)  # copies in place, in the model's dtype
            tied = set(getattr(model, "_tied_weights_keys", None) or ())
            missing = [k for k in result.missing_keys if k not in tied]
            if missing or result.unexpected_keys:
                raise _BadRequest(f"'path' {path!r} does not fit this model: missing {missing[:3]}, "
                                  f"unexpected {result.unexpected_keys[:3]}")

    def unload(self, name: str) -> None:
        with self._lock:
            if name not in self.adapters:
                raise _NotFound(f"The lora adapter '{name}' cannot be found")
            del self.adapters[name]
            if self.adapters:
                self.sampler.model.delete_adapter(name)
            else:  # PEFT cannot run with no adapter: back to the bare base model
                self.sampler.model = self.sampler.model.unload().eval()

    def sleep(self) -> None:
        with self._lock:
            self.sleeping = True
            if self.sampler.model.device.type == "cuda":
                import torch

                self._device = self.sampler.model.device
                self.sampler.model.to("cpu")
                torch.cuda.empty_cache()

    def wake_up(self) -> None:
        with self._lock:
            if self._device is not None:
                self.sampler.model.to(self._device)
                self._device = None
            self.sleeping = False


class Batcher:
    """Runs sampler calls on one worker thread, merging waiting requests for the same model with
    equal parameters. A batch takes what arrives within ``wait_s`` of its first request; with
    ``gap_s``, it also stops early once no request has come for that long (a burst of requests,
    sent together over HTTP, arrives spread over a few hundred milliseconds)."""

    def __init__(self, policies: Policies, max_batch: int = 64, wait_s: float = 0.005,
                 gap_s: float | None = None):
        self.policies, self.max_batch, self.wait_s, self.gap_s = policies, max_batch, wait_s, gap_s
        self._queue: queue.Queue = queue.Queue()
        threading.Thread(target=self._work, daemon=True).start()

    def submit(self, model: str | None, prompt, n: int, params: SamplingParams) -> list:
        future: Future = Future()
        self._queue.put((prompt, (model, n, params), future))
        return future.result()

    def _work(self) -> None:
        held: list = []
        while True:
            first = held.pop(0) if held else self._queue.get()
            batch, deadline = [first], time.monotonic() + self.wait_s
            while len(batch) < self.max_batch:
                same = next((r for r in held if r[1] == first[1]), None)
                if same is not None:
                    held.remove(same)
                    batch.append(same)
                    continue
                left = max(0.0, deadline - time.monotonic())
                try:
                    item = self._queue.get(timeout=left if self.gap_s is None else min(left, self.gap_s))
                except queue.Empty:
                    break
                (batch if item[1] == first[1] else held).append(item)
            model, n, params = first[1]
            try:
                with phase("sampling"):
                    groups = self.policies.sample(model, [r[0] for r in batch], n, params)
                for request, group in zip(batch, groups, strict=True):
                    request[2].set_result(group)
            except Exception as err:  # noqa: BLE001 - handed to each waiting request
                for request in batch:
                    request[2].set_exception(err)


class Server(ThreadingHTTPServer):
    """One thread per connection, and a listen backlog for a burst of clients: the default (5)
    made the kernel reset connections under 64 concurrent clients (benchmarks/serve_load.py)."""

    request_queue_size = 1024
    daemon_threads = True


def make_server(sampler: Sampler, tokenizer, model_name: str, host: str = "127.0.0.1",
                port: int = 8000, max_batch: int = 64, limits: Limits = Limits(),
                enable_lora: bool = False) -> ThreadingHTTPServer:
    policies = Policies(sampler, model_name, enable_lora)
    # A client's concurrent requests (a GRPO step's prompts, an eval's) reach the server spread
    # over tens of milliseconds: a batch waits for them while they keep coming (measured: a tiny
    # GRPO step's 16 requests sampled in 2.0 s instead of 3.5 s; a lone request waits 20 ms).
    batcher = Batcher(policies, max_batch, wait_s=0.1, gap_s=0.02)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # A client that stops sending (or holds an idle connection) frees its thread after this:
        # each connection has a thread of its own, so a slow one never blocks the others.
        timeout = 60

        def log_message(self, fmt, *args):  # quiet: one line per request is noise in eval logs
            pass

        def handle(self):
            try:
                super().handle()
            except (ConnectionError, TimeoutError):  # the client went away (a cancelled stream) or stalled
                self.close_connection = True

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
                self._send(200, {"object": "list", "data": [
                    {"id": name, "object": "model", "parent": None if name == model_name else model_name}
                    for name in policies.names()]})
            elif self.path.rstrip("/") == "/is_sleeping":
                self._send(200, {"is_sleeping": policies.sleeping})
            else:
                self._error(404, f"no route {self.path}")

        def _control(self, route: str, body: dict) -> None:
            if route == "/v1/load_lora_adapter":
                name, path = _required(body, "lora_name"), _required(body, "lora_path")
                policies.load(name, path, bool(_field(body, "load_inplace", bool, False)))
                self._send(200, {"status": "ok", "message": f"Success: LoRA adapter '{name}' added."})
            elif route == "/v1/unload_lora_adapter":
                name = _required(body, "lora_name")
                policies.unload(name)
                self._send(200, {"status": "ok", "message": f"Success: LoRA adapter '{name}' removed."})
            elif route == "/v1/load_weights":
                path = _required(body, "path", " (a folder of safetensors weights)")
                policies.load_weights(path)
                self._send(200, {"status": "ok", "message": f"Success: weights loaded from {path}."})
            elif route == "/sleep":
                policies.sleep()
                self._send(200, {"status": "ok"})
            elif route == "/wake_up":
                policies.wake_up()
                self._send(200, {"status": "ok"})
            else:  # /reset_prefix_cache: no cache outlives a request here
                self._send(200, {"status": "ok"})

        def do_POST(self):
            route = self.path.split("?", 1)[0]
            controls = ("/v1/load_lora_adapter", "/v1/unload_lora_adapter", "/v1/load_weights", "/sleep",
                        "/wake_up", "/reset_prefix_cache")
            if route not in ("/v1/chat/completions", "/v1/completions", *controls):
                self._error(404, f"no route {self.path}")
                return
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                if not isinstance(body, dict):
                    raise _BadRequest("the body must be a JSON object")
                if route in controls:
                    try:
                        self._control(route, body)
                    except (_BadRequest, _NotFound):
                        raise
                    except Exception as err:  # noqa: BLE001 - e.g. an adapter that does not fit the model
                        self._error(500, f"{route} failed: {type(err).__name__}: {err}", "server_error")
                    return
                chat = self.path == "/v1/chat/completions"
                prompt = _prompt(self.path, body, tokenizer, limits)
                n, params = _params(body, limits)
                model = _field(body, "model", str)
            except _BadRequest as err:
                self._error(400, str(err))
                return
            except _NotFound as err:
                self._error(404, str(err), "NotFoundError")
                return
            except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
                self._error(400, "the body is not JSON")
                return
            try:
                completions = batcher.submit(model, prompt, n, params)
            except _NotFound as err:
                self._error(404, str(err), "NotFoundError")
                return
            except _Unavailable as err:
                self._error(503, str(err), "ServiceUnavailableError")
                return
            except Exception as err:  # noqa: BLE001 - the server stays up; the client learns why
                self._error(500, f"sampling failed: {type(err).__name__}: {err}", "server_error")
                return
            reply = _reply(completions, chat, model or model_name, body, tokenizer)
            if body.get("stream"):
                self._stream(reply, chat)
            else:
                self._send(200, reply)

    return Server((host, port), Handler)


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
