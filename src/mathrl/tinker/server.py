"""``mathrl serve --tinker``: the HTTP API of the Tinker SDK (``tinker==0.38.0``) over local
learners and samplers, so code written for the Tinker service (the studies' scripts,
tinker-cookbook's loops) trains and samples a model on this machine.

What a client sees (the wire format is the SDK's; see :mod:`mathrl.tinker.wire`):

- A session (``create_session``, heartbeats, ``sessions/{id}/finish``); a session whose heartbeat
  lapses (``heartbeat_timeout_s``) is finished for it: its models and samplers are freed.
- Training models (``create_model``: a LoRA adapter of the given rank and seed on the attention,
  MLP and/or unembedding layers, alpha 32 as Tinker's, on a base model this server was started
  with), each a :class:`~mathrl.train.local.LocalLearner`. ``forward`` / ``forward_backward`` take
  the learner's loss registry by name (``cross_entropy``, ``importance_sampling``, ``ppo``,
  ``cispo``, ``dro``) with ``loss_fn_config``; ``optim_step`` takes Adam's settings as they come.
  A model's calls run in ``seq_id`` order on its own worker, and a retried call (the same
  ``seq_id``) is answered, not applied twice.
- Checkpoints: ``save_weights`` (the whole training state), ``save_weights_for_sampler`` (the
  adapter), ``load_weights`` and training clients created from a saved state. Each is a folder
  under ``root/<model_id>/{weights,sampler_weights}/<name>`` named ``tinker://<model_id>/...``; a
  restarted server still serves every saved path.
- Sampling sessions (``create_sampling_session``, ``asample``, ``compute_logprobs``): the base
  model with the session's adapter, through the in-process engine mathrl serve also runs
  (runtime LoRA by name, requests batched).
- Every call returns a future; ``retrieve_future`` long-polls it (408 while pending) and answers
  with the result (protobuf for ``forward_backward`` and ``sample``) or ``{"error", "category"}``.

Safety: binds 127.0.0.1 unless told otherwise; with ``api_key`` every other key is a 401; request
bodies are bounded; nothing a client sends is evaluated.
"""

from __future__ import annotations

import itertools
import json
import shutil
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import torch

from mathrl.errors import UserError
from mathrl.serve import Server
from mathrl.tinker import wire
from mathrl.train.learner import AdamParams
from mathrl.train.losses import LOSSES, Loss

PROTO = "application/x-protobuf"
LORA_ALPHA = 32  # Tinker trains LoRA with alpha 32 at any rank
UNSUPPORTED_LOSSES = {"gspo", "stable_reinforce", "custom"}
ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = ("gate_proj", "up_proj", "down_proj")
KEEP_EPHEMERAL = 2  # unnamed sampler weights kept per model (the one being sampled, the one before)


@dataclass
class Settings:
    models: dict[str, str]  # base model name clients use -> what mathrl loads ('tiny', a folder, a hub id)
    root: Path  # where tinker:// paths live
    device: str = "auto"
    dtype: str = "auto"
    api_key: str | None = None
    max_body_bytes: int = 64 << 20
    poll_s: float = 20.0  # a retrieve_future waits this long before its 408 (the SDK's limit is 45 s)
    heartbeat_timeout_s: float = 120.0
    batch_size: int = 256  # sequences decoded together
    # A batch of samples collects requests until none has come for batch_gap_s (at most
    # batch_wait_s): the cookbook sends one request per sample, all at once, and they are worth
    # decoding together.
    batch_wait_s: float = 3.0
    batch_gap_s: float = 0.15
    fwdbwd_max_chunk_len: int = 1024  # datums per forward_backward request the SDK sends
    max_tokens: int = 8192  # the most a sample may ask for


class RequestFailed(Exception):
    def __init__(self, message: str, category: str = "user"):
        super().__init__(message)
        self.category = category


def lora_settings(rank: int, train_attn: bool = True, train_mlp: bool = True, train_unembed: bool = True):
    """Tinker's LoRA as mathrl's: alpha 32, on the layers asked for."""
    from mathrl.train.policy import LoraSettings

    targets = ((ATTENTION if train_attn else ()) + (MLP if train_mlp else ())
               + (("lm_head",) if train_unembed else ()))
    if not targets:
        raise RequestFailed("lora_config: train at least one of attention, MLP and unembedding layers")
    return LoraSettings(rank=rank, alpha=LORA_ALPHA, target_modules=targets)


class Futures:
    """Results by request id; ``wait`` blocks until one is there or a timeout passes."""

    def __init__(self):
        self._results: dict[str, tuple] = {}
        self._pending: set[str] = set()
        self._cond = threading.Condition()

    def new(self) -> str:
        request_id = uuid.uuid4().hex
        with self._cond:
            self._pending.add(request_id)
        return request_id

    def set(self, request_id: str, result: tuple) -> None:
        """``result``: ("json", dict), ("proto", bytes) or ("error", message, category)."""
        with self._cond:
            self._pending.discard(request_id)
            self._results[request_id] = (time.monotonic(), result)
            self._cond.notify_all()

    def run(self, request_id: str, fn: Callable[[], tuple]) -> None:
        try:
            self.set(request_id, fn())
        except RequestFailed as err:
            self.set(request_id, ("error", str(err), err.category))
        except (UserError, ValueError) as err:
            self.set(request_id, ("error", str(err), "user"))
        except Exception as err:  # noqa: BLE001 - reported to the client, logged here
            traceback.print_exc()
            self.set(request_id, ("error", f"{type(err).__name__}: {err}", "server"))

    def wait(self, request_id: str, timeout: float):
        deadline = time.monotonic() + timeout
        with self._cond:
            while request_id not in self._results:
                if request_id not in self._pending:
                    return "unknown"
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)
            return self._results[request_id][1]

    def expire(self, max_age_s: float = 3600.0) -> None:
        """Forget results nobody fetched for an hour."""
        cutoff = time.monotonic() - max_age_s
        with self._cond:
            for key in [k for k, (t, _) in self._results.items() if t < cutoff]:
                del self._results[key]


class TrainingModel:
    """One training client's model: a learner, and a worker that runs its calls in ``seq_id`` order."""

    GAP_WAIT_S = 30.0  # how long a call waits for a missing earlier one before it runs anyway

    def __init__(self, model_id: str, session_id: str, base_model: str, lora: dict, learner,
                 futures: Futures):
        self.model_id, self.session_id, self.base_model, self.lora = model_id, session_id, base_model, lora
        self.learner, self.futures = learner, futures
        self.requests: dict[int, str] = {}  # seq_id -> request id (a retry gets the same one)
        self._pending: dict[int, tuple[str, Callable]] = {}
        self._next: int | None = None
        self._cond = threading.Condition()
        self._closed = False
        self.ephemeral = itertools.count()
        threading.Thread(target=self._work, daemon=True, name=f"tinker-{model_id}").start()

    def submit(self, seq_id: int | None, fn: Callable[[], tuple]) -> str:
        with self._cond:
            if seq_id is not None and seq_id in self.requests:
                return self.requests[seq_id]
            request_id = self.futures.new()
            key = seq_id if seq_id is not None else (max(self._pending, default=self._next or 0))
            if seq_id is not None:
                self.requests[seq_id] = request_id
            self._pending[key] = (request_id, fn)
            self._cond.notify_all()
        return request_id

    def _work(self) -> None:
        while True:
            with self._cond:
                waited_since = time.monotonic()
                while not self._closed:
                    if self._pending:
                        first = min(self._pending)
                        if self._next is None or first <= self._next:
                            break
                        if time.monotonic() - waited_since > self.GAP_WAIT_S:
                            break  # the missing call never came: go on rather than stall the model
                    self._cond.wait(1.0)
                if self._closed:
                    return
                seq = min(self._pending)
                request_id, fn = self._pending.pop(seq)
                self._next = seq + 1
            self.futures.run(request_id, fn)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


@dataclass
class SamplingSession:
    sampling_session_id: str
    base_model: str
    adapter: Path | None  # an adapter folder, or None: the base model
    model_path: str | None = None
    slot: str | None = None  # the engine's adapter slot: the training model's own, or the folder
    requests: dict[int, tuple[str, list[str]]] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str] | None:
        return None if self.adapter is None else (self.slot or str(self.adapter), str(self.adapter))


class SlotPolicies:
    """Adapter slots over one base model (:class:`mathrl.serve.Policies`): a request names
    ``(slot, folder)``, and the slot is loaded with that folder (in place, when the shape is the
    same: no new modules) under the same lock as the batch that samples it, so a batch never sees
    another folder's weights. A training model's successive sampler weights share its slot;
    at most ``max_slots`` are kept, the least recently used unloaded first."""

    def __init__(self, policies, max_slots: int = 4):
        self.policies, self.max_slots = policies, max_slots
        self.lru: list[str] = []

    def _ensure(self, key) -> str | None:
        if key is None:
            return None
        slot, folder = key
        p = self.policies
        if slot in self.lru:
            self.lru.remove(slot)
        self.lru.append(slot)
        for old in self.lru[:-self.max_slots]:
            if len(p.adapters) > 1:
                p.sampler.model.delete_adapter(old)
                del p.adapters[old]
        del self.lru[:-self.max_slots]
        if p.adapters.get(slot) != folder:
            p._load(slot, folder, True, p._adapter_config(slot, folder))
        return slot

    def sample(self, key, prompts, n: int, params):
        with self.policies.lock():
            return self.policies._sample(self._ensure(key), prompts, n, params)

    def prompt_logprobs(self, key, prompt: list[int]) -> list[float | None]:
        """Each prompt token's log-probability given the ones before (None for the first)."""
        from mathrl.train.policy import token_logprobs

        with self.policies.lock(), torch.no_grad():
            slot = self._ensure(key)
            with self.policies.active(slot) as model:
                logp = token_logprobs(model, torch.tensor([prompt], device=model.device), None)[0].tolist()
        return [None] + logp[1:]


class Engines:
    """The in-process engine per base model (the sampler ``mathrl serve`` runs), its requests
    batched, with adapter slots (:class:`SlotPolicies`)."""

    def __init__(self, settings: Settings, loader: Callable):
        self.settings, self.loader = settings, loader
        self._engines: dict[str, tuple] = {}
        self._lock = threading.Lock()

    def _engine(self, base_model: str):
        from mathrl.sampling.hf import HFSampler
        from mathrl.serve import Batcher, Policies

        with self._lock:
            if base_model not in self._engines:
                model, tokenizer = self.loader(base_model)
                sampler = HFSampler(model, tokenizer, self.settings.batch_size)
                slots = SlotPolicies(Policies(sampler, base_model, enable_lora=True))
                batcher = Batcher(slots, self.settings.batch_size, self.settings.batch_wait_s,
                                  self.settings.batch_gap_s)
                self._engines[base_model] = (slots, batcher)
            return self._engines[base_model]

    def sample(self, session: SamplingSession, prompt: list[int], n: int, params):
        _, batcher = self._engine(session.base_model)
        return batcher.submit(session.key, prompt, n, params)

    def prompt_logprobs(self, session: SamplingSession, prompt: list[int]) -> list[float | None]:
        slots, _ = self._engine(session.base_model)
        return slots.prompt_logprobs(session.key, prompt)


class Service:
    """The API's state and its calls, each a method returning a JSON payload (or raising)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.futures = Futures()
        self.sessions: dict[str, dict] = {}
        self.models: dict[str, TrainingModel] = {}
        self.samplers: dict[str, SamplingSession] = {}
        self.engines = Engines(settings, self._load_base)
        self._lock = threading.Lock()
        self._counter = itertools.count()
        self.settings.root.mkdir(parents=True, exist_ok=True)
        threading.Thread(target=self._reap, daemon=True, name="tinker-reaper").start()

    # ---- sessions --------------------------------------------------------------------------

    def create_session(self, body: dict) -> dict:
        session_id = f"s{next(self._counter)}-{uuid.uuid4().hex[:8]}"
        with self._lock:
            self.sessions[session_id] = {"heartbeat": time.monotonic(), "sampling": itertools.count()}
        return {"session_id": session_id, "type": "create_session"}

    def heartbeat(self, body: dict) -> dict:
        session = self.sessions.get(body.get("session_id"))
        if session is None:
            raise _Gone(f"session {body.get('session_id')!r} is not open")
        session["heartbeat"] = time.monotonic()
        return {"type": "session_heartbeat"}

    def finish(self, session_id: str) -> dict:
        with self._lock:
            self.sessions.pop(session_id, None)
            models = [m for m in self.models.values() if m.session_id == session_id]
            prefix = f"{session_id}:"
            samplers = [s for s in self.samplers.values() if s.sampling_session_id.startswith(prefix)]
            for m in models:
                del self.models[m.model_id]
            for s in samplers:
                del self.samplers[s.sampling_session_id]
        for m in models:
            m.close()
        return {}

    def _reap(self) -> None:
        """Finish sessions whose client went away (no heartbeat): their memory is freed."""
        while True:
            time.sleep(min(10.0, self.settings.heartbeat_timeout_s / 2))
            cutoff = time.monotonic() - self.settings.heartbeat_timeout_s
            for session_id in [s for s, v in list(self.sessions.items()) if v["heartbeat"] < cutoff]:
                self.finish(session_id)
            self.futures.expire()

    def _session(self, session_id: str) -> dict:
        session = self.sessions.get(session_id)
        if session is None:
            raise RequestFailed(f"session {session_id!r} is not open (create_session first)")
        return session

    # ---- models ----------------------------------------------------------------------------

    def _base_name(self, base_model: str | None) -> str:
        if base_model not in self.settings.models:
            raise RequestFailed(f"base model {base_model!r} is not served here; this server was started with "
                                f"{', '.join(self.settings.models)} "
                                "(mathrl serve --tinker --model NAME[=PATH])")
        return base_model

    def _load_base(self, base_model: str):
        from mathrl.device import choose_device, choose_dtype
        from mathrl.models import load_model, load_tokenizer

        source = self.settings.models[base_model]
        device = choose_device(self.settings.device)
        return load_model(source, device, choose_dtype(device, self.settings.dtype)), load_tokenizer(source)

    def _new_learner(self, model_id: str, base_model: str, lora: dict):
        from mathrl.device import choose_device, choose_dtype
        from mathrl.distributed import Dist
        from mathrl.models import load_tokenizer
        from mathrl.train.local import LocalLearner, Plan

        source = self.settings.models[base_model]
        device = choose_device(self.settings.device)
        if lora.get("seed") is not None:
            torch.manual_seed(int(lora["seed"]))
        settings = lora_settings(int(lora.get("rank", 32)), lora.get("train_attn", True),
                                 lora.get("train_mlp", True), lora.get("train_unembed", True))
        return LocalLearner(source, load_tokenizer(source), self._run_dir(model_id), lora=settings,
                            plan=Plan(micro_batch_size=64, micro_batch_tokens=32768, all_positions=True),
                            dtype=choose_dtype(device, self.settings.dtype), dist=Dist(device=device))

    def _add_model(self, session_id: str, model_seq_id: int, base_model: str, lora: dict) -> TrainingModel:
        model_id = f"{session_id}:train:{model_seq_id}"
        learner = self._new_learner(model_id, base_model, lora)
        model = TrainingModel(model_id, session_id, base_model, lora, learner, self.futures)
        with self._lock:
            self.models[model_id] = model
        return model

    def create_model(self, body: dict) -> dict:
        session_id = body.get("session_id")
        self._session(session_id)
        base = self._base_name(body.get("base_model"))
        if (body.get("optimizer_config") or {}).get("type", "adamw") != "adamw":
            raise RequestFailed("only the adamw optimizer is supported")
        lora = body.get("lora_config")
        if lora is None:
            raise RequestFailed("full fine-tuning through the Tinker API is not supported here: "
                                "give lora_config")
        request_id = self.futures.new()

        def create():
            model = self._add_model(session_id, int(body.get("model_seq_id", 0)), base, dict(lora))
            return ("json", {"model_id": model.model_id, "type": "create_model"})

        threading.Thread(target=self.futures.run, args=(request_id, create), daemon=True).start()
        return {"request_id": request_id, "model_id": f"{session_id}:train:{body.get('model_seq_id', 0)}"}

    def _model(self, model_id: str) -> TrainingModel:
        model = self.models.get(model_id)
        if model is None:
            raise RequestFailed(f"model {model_id!r} is not loaded here "
                                "(create_model, or load a saved state)")
        return model

    def get_info(self, body: dict) -> dict:
        from mathrl.models import resolve_model

        model = self._model(body.get("model_id"))
        return {"type": "get_info", "model_id": model.model_id, "is_lora": True,
                "lora_rank": int(model.lora.get("rank", 32)), "model_name": model.base_model,
                "model_data": {"arch": "qwen3", "model_name": model.base_model,
                               "tokenizer_id": str(resolve_model(self.settings.models[model.base_model]))}}

    # ---- training calls --------------------------------------------------------------------

    def forward_backward(self, body: bytes) -> dict:
        request = wire.read_forward_backward(body)
        model = self._model(request.model_id)

        def run():
            loss = self._loss(request.loss_fn, request.loss_fn_config)
            call = model.learner.forward if request.forward_only else model.learner.forward_backward
            result = call(request.data, loss, return_logprobs=True)
            fields = {"logprobs": result.logprobs}
            if result.elementwise_loss is not None:
                fields["elementwise_loss"] = result.elementwise_loss
            return ("proto", wire.forward_backward_output(fields, {"loss:sum": result.metrics["train/loss"]}))

        return {"request_id": model.submit(request.seq_id, run), "model_id": model.model_id}

    def _loss(self, name: str, config: dict) -> Loss:
        if name in UNSUPPORTED_LOSSES or name not in LOSSES:
            raise RequestFailed(f"loss_fn {name!r} is not supported here; supported: "
                                f"{', '.join(sorted(LOSSES))}")
        try:
            return Loss(name, config, entropy=False)
        except ValueError as err:
            raise RequestFailed(f"loss_fn_config: {err}") from None

    def optim_step(self, body: dict) -> dict:
        model = self._model(body.get("model_id"))
        if "optimizer_params" in body:
            raise RequestFailed("only Adam's parameters are supported (adam_params)")
        params = body.get("adam_params") or {}
        adam = AdamParams(learning_rate=float(params.get("learning_rate", 1e-4)),
                          beta1=float(params.get("beta1", 0.9)), beta2=float(params.get("beta2", 0.95)),
                          eps=float(params.get("eps", 1e-12)),
                          weight_decay=float(params.get("weight_decay", 0.0)),
                          grad_clip_norm=float(params.get("grad_clip_norm", 0.0)))

        def run():
            metrics = model.learner.optim_step(adam)
            return ("json", {"metrics": {"grad_norm:mean": metrics["train/grad_norm"]}})

        return {"request_id": model.submit(body.get("seq_id"), run), "model_id": model.model_id}

    # ---- checkpoints -----------------------------------------------------------------------

    def _run_dir(self, model_id: str) -> Path:
        return self.settings.root / model_id

    def _checkpoint(self, model_id: str, kind: str, name: str) -> Path:
        if not name or "/" in name or name.startswith("."):
            raise RequestFailed(f"checkpoint name {name!r}: a name without '/'")
        return self._run_dir(model_id) / kind / name

    def _path_folder(self, path: str, kinds=("weights", "sampler_weights")) -> tuple[Path, str]:
        if not path.startswith("tinker://"):
            raise RequestFailed(f"{path!r} is not a tinker:// path")
        parts = path[len("tinker://"):].split("/")
        if len(parts) != 3 or parts[1] not in kinds:
            raise RequestFailed(f"{path!r}: expected tinker://<run>/<{'|'.join(kinds)}>/<name>")
        folder = self._checkpoint(parts[0], parts[1], parts[2])
        if not (folder / "meta.json").is_file():
            raise RequestFailed(f"{path!r} does not exist on this server")
        return folder, parts[1]

    def _write_meta(self, folder: Path, model: TrainingModel) -> None:
        from mathrl.fileio import write_atomic

        meta = {"model_id": model.model_id, "base_model": model.base_model, "lora": model.lora}
        write_atomic(folder / "meta.json", json.dumps(meta) + "\n")

    def save_weights(self, body: dict) -> dict:
        model = self._model(body.get("model_id"))
        name = body.get("path")
        folder = self._checkpoint(model.model_id, "weights", name)

        def run():
            model.learner.save_state(folder, {"step": 0})
            self._write_meta(folder, model)
            return ("json", {"path": f"tinker://{model.model_id}/weights/{name}", "type": "save_weights"})

        return {"request_id": model.submit(body.get("seq_id"), run), "model_id": model.model_id}

    def save_weights_for_sampler(self, body: dict) -> dict:
        from mathrl.train.local import publish_to

        model = self._model(body.get("model_id"))
        name = body.get("path")
        ephemeral = name is None
        session_id = model.session_id

        def run():
            label = f"ephemeral-{next(model.ephemeral)}" if ephemeral else name
            folder = self._checkpoint(model.model_id, "sampler_weights", label)
            publish_to(model.learner.model, folder)
            self._write_meta(folder, model)
            path = f"tinker://{model.model_id}/sampler_weights/{label}"
            if not ephemeral:
                return ("json", {"path": path, "type": "save_weights_for_sampler"})
            self._prune_ephemeral(model)
            session = self._new_sampling_session(session_id, model.base_model, folder, path,
                                                 slot=model.model_id)
            return ("json", {"sampling_session_id": session.sampling_session_id,
                             "type": "save_weights_for_sampler"})

        return {"request_id": model.submit(body.get("seq_id"), run), "model_id": model.model_id}

    def _prune_ephemeral(self, model: TrainingModel) -> None:
        root = self._run_dir(model.model_id) / "sampler_weights"
        found = sorted((int(p.name.split("-")[1]), p) for p in root.glob("ephemeral-*") if p.is_dir())
        for _, old in found[:-KEEP_EPHEMERAL]:
            for stale in [s for s in self.samplers.values() if s.adapter == old]:
                self.samplers.pop(stale.sampling_session_id, None)
            shutil.rmtree(old, ignore_errors=True)

    def load_weights(self, body: dict) -> dict:
        folder, kind = self._path_folder(str(body.get("path", "")), kinds=("weights",))
        with_optimizer = bool(body.get("optimizer", False))
        meta = json.loads((folder / "meta.json").read_text())
        if "model_id" in body:  # a training client loads into its own model
            model = self._model(body["model_id"])

            def run():
                model.learner.load_state(folder, optimizer=with_optimizer)
                return ("json", {"path": body["path"], "type": "load_weights"})

            return {"request_id": model.submit(body.get("seq_id"), run), "model_id": model.model_id}
        session_id = body.get("session_id")
        self._session(session_id)
        base = self._base_name(body.get("base_model") or meta["base_model"])
        request_id = self.futures.new()
        model_seq_id = int(body.get("model_seq_id", 0))

        def create():
            model = self._add_model(session_id, model_seq_id, base, meta["lora"])
            model.learner.load_state(folder, optimizer=with_optimizer)
            return ("json", {"path": body["path"], "model_id": model.model_id, "type": "load_weights"})

        threading.Thread(target=self.futures.run, args=(request_id, create), daemon=True).start()
        return {"request_id": request_id}

    def list_checkpoints(self, model_id: str) -> dict:
        out = []
        for kind, label in (("weights", "training"), ("sampler_weights", "sampler")):
            for folder in sorted((self._run_dir(model_id) / kind).glob("*")):
                if (folder / "meta.json").is_file():
                    saved = time.gmtime((folder / "meta.json").stat().st_mtime)
                    out.append({"checkpoint_id": f"{kind}/{folder.name}", "checkpoint_type": label,
                                "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", saved),
                                "tinker_path": f"tinker://{model_id}/{kind}/{folder.name}"})
        return {"checkpoints": out}

    # ---- sampling --------------------------------------------------------------------------

    def _new_sampling_session(self, session_id: str, base_model: str, adapter: Path | None,
                              model_path: str | None, slot: str | None = None) -> SamplingSession:
        session = self.sessions.get(session_id) or {"sampling": itertools.count()}
        sampling_id = f"{session_id}:sample:{next(session['sampling'])}-{uuid.uuid4().hex[:6]}"
        sampler = SamplingSession(sampling_id, base_model, adapter, model_path, slot)
        with self._lock:
            self.samplers[sampling_id] = sampler
        return sampler

    def create_sampling_session(self, body: dict) -> dict:
        session_id = body.get("session_id")
        self._session(session_id)
        path = body.get("model_path")
        if path:
            folder, _ = self._path_folder(path, kinds=("sampler_weights", "weights"))
            meta = json.loads((folder / "meta.json").read_text())
            base = self._base_name(body.get("base_model") or meta["base_model"])
            session = self._new_sampling_session(session_id, base, folder, path)
        else:
            base = self._base_name(body.get("base_model"))
            session = self._new_sampling_session(session_id, base, None, None)
        return {"sampling_session_id": session.sampling_session_id, "type": "create_sampling_session"}

    def get_sampler(self, sampling_session_id: str) -> dict:
        session = self.samplers.get(sampling_session_id)
        if session is None:
            raise _NotFound(f"sampler {sampling_session_id!r} does not exist")
        return {"sampler_id": session.sampling_session_id, "base_model": session.base_model,
                **({"model_path": session.model_path} if session.model_path else {})}

    def asample(self, body: dict) -> dict:
        session = self.samplers.get(body.get("sampling_session_id"))
        if session is None:
            raise RequestFailed(f"sampling session {body.get('sampling_session_id')!r} does not exist")
        seq_id = body.get("seq_id")
        if seq_id is not None and seq_id in session.requests:
            request_id, ids = session.requests[seq_id]
            return {"request_id": request_id, "sample_sequence_ids": ids}
        n = int(body.get("num_samples", 1))
        if not 1 <= n <= 1024:
            raise RequestFailed(f"num_samples must be 1..1024, got {n}")
        prompt = _prompt_tokens(body.get("prompt") or {})
        params = self._sampling_params(body.get("sampling_params") or {})
        want_prompt_logprobs = bool(body.get("prompt_logprobs"))
        for option in ("topk_prompt_logprobs", "topk_sample_logprobs", "prompt_alt_tokens_k"):
            if body.get(option):
                raise RequestFailed(f"{option} is not supported here")
        request_id = self.futures.new()
        ids = [f"{request_id}:{i}" for i in range(n)]
        if seq_id is not None:
            session.requests[seq_id] = (request_id, ids)

        def run():
            completions = self.engines.sample(session, prompt, n, params)
            logprobs = self.engines.prompt_logprobs(session, prompt) if want_prompt_logprobs else None
            sequences = [wire.Sequence_(c.token_ids, c.logprobs, c.finish_reason == "stop")
                         for c in completions]
            return ("proto", wire.sample_response(sequences, logprobs))

        threading.Thread(target=self.futures.run, args=(request_id, run), daemon=True).start()
        return {"request_id": request_id, "sample_sequence_ids": ids}

    def _sampling_params(self, p: dict):
        from mathrl.sampling import SamplingParams

        stop = p.get("stop")
        max_tokens = p.get("max_tokens") or self.settings.max_tokens
        if not 1 <= int(max_tokens) <= self.settings.max_tokens:
            raise RequestFailed(f"max_tokens must be 1..{self.settings.max_tokens}, got {max_tokens}")
        strings, token_ids = (), ()
        if isinstance(stop, str):
            strings = (stop,)
        elif isinstance(stop, list) and stop and all(isinstance(s, int) for s in stop):
            token_ids = tuple(stop)
        elif isinstance(stop, list):
            strings = tuple(str(s) for s in stop)
        top_k = int(p.get("top_k", -1))
        return SamplingParams(temperature=float(p.get("temperature", 1.0)), top_p=float(p.get("top_p", 1.0)),
                              top_k=max(0, top_k), max_tokens=int(max_tokens), stop=strings,
                              stop_token_ids=token_ids, seed=p.get("seed"),
                              ignore_eos=stop is not None)  # a stop list replaces the model's own stop


class _Gone(Exception):
    pass


class _NotFound(Exception):
    pass


def _prompt_tokens(prompt: dict) -> list[int]:
    tokens: list[int] = []
    for chunk in prompt.get("chunks", []):
        if chunk.get("type") != "encoded_text":
            raise RequestFailed(f"only text prompts are supported, not {chunk.get('type')!r} chunks")
        tokens.extend(int(t) for t in chunk.get("tokens", []))
    if not tokens:
        raise RequestFailed("the prompt is empty")
    return tokens


def client_config(settings: Settings) -> dict:
    """What the SDK is told at start-up: plain httpx, no JWT exchange, no compression, chunks of a
    forward_backward sent one after the other, futures retrieved one by one."""
    return {"pjwt_auth_enabled": False, "use_pyqwest_transport": False, "proto_compress_fwdbwd": False,
            "parallel_fwdbwd_chunks": False, "fwdbwd_max_chunk_len": settings.fwdbwd_max_chunk_len,
            "fwdbwd_max_chunk_bytes_count": 5_000_000, "sample_use_retrieve_futures": False,
            "sample_join_sampling_session": False, "custom_loss_server_side": False,
            "sample_no_retries": False}


def make_server(settings: Settings, host: str = "127.0.0.1", port: int = 8000) -> ThreadingHTTPServer:
    service = Service(settings)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):
            pass

        def _send(self, status: int, payload: dict | bytes, content_type: str = "application/json") -> None:
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _authorized(self) -> bool:
            if settings.api_key is None or self.headers.get("X-API-Key") == settings.api_key:
                return True
            self._send(401, {"error": "invalid API key", "category": "user"})
            return False

        def _body(self) -> bytes | None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > settings.max_body_bytes:
                self._send(413, {"error": f"request body of {length} bytes is over the limit "
                                          f"({settings.max_body_bytes})", "category": "user"})
                self.close_connection = True
                return None
            return self.rfile.read(length) if length else b""

        def do_GET(self):
            if not self._authorized():
                return
            path = self.path.split("?")[0].rstrip("/")
            try:
                if path in ("/api/v1/healthz", "/health"):
                    self._send(200, {"status": "ok"})
                elif path == "/api/v1/get_server_capabilities":
                    models = [{"model_name": m, "trainable": True, "sampleable": True}
                              for m in settings.models]
                    self._send(200, {"supported_models": models})
                elif path.startswith("/api/v1/samplers/"):
                    self._send(200, service.get_sampler(path[len("/api/v1/samplers/"):]))
                elif path.startswith("/api/v1/training_runs/") and path.endswith("/checkpoints"):
                    run_id = path[len("/api/v1/training_runs/"):-len("/checkpoints")]
                    self._send(200, service.list_checkpoints(run_id))
                else:
                    self._send(404, {"error": f"no route GET {path}", "category": "user"})
            except _NotFound as err:
                self._send(404, {"error": str(err), "category": "user"})

        def do_POST(self):
            if not self._authorized():
                return
            raw = self._body()
            if raw is None:
                return
            path = self.path.split("?")[0].rstrip("/")
            route = path[len("/api/v1/"):] if path.startswith("/api/v1/") else path
            body: dict = {}
            try:
                if route == "forward_backward":
                    self._send(200, service.forward_backward(raw))
                    return
                body = json.loads(raw or b"{}")
                if not isinstance(body, dict):
                    raise RequestFailed("the request body must be a JSON object")
                if route == "retrieve_future":
                    self._retrieve(str(body.get("request_id")))
                    return
                handler = _ROUTES.get(route)
                if handler is not None:
                    self._send(200, handler(service, body))
                elif route.startswith("sessions/") and route.endswith("/finish"):
                    self._send(200, service.finish(route[len("sessions/"):-len("/finish")]))
                else:
                    self._send(404, {"error": f"no route POST {path}", "category": "user"})
            except (RequestFailed, wire.WireError) as err:
                if route in FUTURE_ROUTES:  # the SDK's error path: a future that fails with the reason
                    self._send(200, _failed_future(service.futures, route, body, str(err)))
                else:
                    self._send(400, {"error": str(err), "category": "user"})
            except json.JSONDecodeError as err:
                self._send(400, {"error": f"the request body is not JSON: {err}", "category": "user"})
            except _Gone as err:
                self._send(410, {"error": str(err), "category": "user"})

        def _retrieve(self, request_id: str) -> None:
            result = service.futures.wait(request_id, settings.poll_s)
            if result is None:  # still running: the SDK polls again at once, silently
                self._send(408, {"type": "try_again", "request_id": request_id, "queue_state": "active"})
            elif result == "unknown":
                self._send(200, {"error": f"unknown request {request_id!r} (expired, or from before a "
                                          "restart)", "category": "user"})
            elif result[0] == "proto":
                self._send(200, result[1], PROTO)
            elif result[0] == "json":
                self._send(200, result[1])
            else:
                self._send(200, {"error": result[1], "category": result[2]})

    server = Server((host, port), Handler)
    server.service = service  # for tests and the CLI
    return server


_ROUTES: dict[str, Callable[[Service, dict], dict]] = {
    "client/config": lambda s, b: client_config(s.settings),
    "client/dynamic_config": lambda s, b: {"refresh_interval_sec": 300, "sample_cancel_enabled": False},
    "create_session": Service.create_session,
    "session_heartbeat": Service.heartbeat,
    "telemetry": lambda s, b: {"status": "accepted"},
    "create_model": Service.create_model,
    "get_info": Service.get_info,
    "optim_step": Service.optim_step,
    "save_weights": Service.save_weights,
    "save_weights_for_sampler": Service.save_weights_for_sampler,
    "load_weights": Service.load_weights,
    "create_sampling_session": Service.create_sampling_session,
    "asample": Service.asample,
}


FUTURE_ROUTES = {"create_model", "forward_backward", "optim_step", "save_weights", "save_weights_for_sampler",
                 "load_weights", "asample"}


def _failed_future(futures: Futures, route: str, body: dict, message: str) -> dict:
    request_id = futures.new()
    futures.set(request_id, ("error", message, "user"))
    reply = {"request_id": request_id}
    if route == "asample":  # the SDK checks one id per sample before it reads the result
        reply["sample_sequence_ids"] = [f"{request_id}:{i}" for i in range(int(body.get("num_samples", 1)))]
    return reply


def parse_models(specs: list[str]) -> dict[str, str]:
    """``--model NAME[=PATH]`` options: the name clients use, and what mathrl loads for it."""
    out = {}
    for spec in specs:
        name, _, source = spec.partition("=")
        out[name] = source or name
    return out
