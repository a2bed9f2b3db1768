"""The seam between trainer and rollouts: sample -> grade -> train -> publish.

After each optimizer step the trainer *publishes* its weights as a :class:`PolicyRef`; the
rollout engine *loads* that reference before it samples the next batch. Prompts are token ids
encoded by the trainer's tokenizer, and every completion must come back with its token ids and
their logprobs (the loss needs both): an engine that omits them fails the run with one message.

Two engines:

- :class:`InProcessRollouts` samples the very module being trained (the default; CPU and
  tests). Its weights are always the newest, so publishing writes nothing and costs nothing.
- :class:`ServerRollouts` samples one or more OpenAI-compatible servers that serve LoRA adapters
  loaded at run time: ``mathrl serve --enable-lora``, or vLLM with ``--enable-lora`` and
  ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=1`` (start it with ``--logprobs-mode processed_logprobs`` so
  its logprobs are those of the distribution it sampled, after temperature). Publishing saves
  the adapter to ``OUT/published/step_NNNNNN``, then on every server loads it in place under one
  name (``/v1/load_lora_adapter``, ``load_inplace``) and resets the prefix cache so no entry
  computed with older weights is served. Requests name the adapter and are spread across the
  servers, prompt by prompt. The servers are ones the user started (``engine: server``, ``urls``)
  or one mathrl starts for the run and stops after it (``engine: serve`` or ``vllm``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, Protocol

from mathrl.distributed import SINGLE, Dist
from mathrl.errors import UserError
from mathrl.processes import die_with_parent, stop
from mathrl.sampling import SamplingParams
from mathrl.types import Completion

PUBLISHED_DIR = "published"
KEEP_PUBLISHED = 2  # the version being served and the one before it


ENGINES = ("in_process", "server", "serve", "vllm")


@dataclass(frozen=True)
class RolloutSettings:
    """Where GRPO samples. ``in_process`` (default): the trained module. ``server``: running
    servers at ``urls``. ``serve`` / ``vllm``: mathrl starts ``mathrl serve --enable-lora`` or a
    vLLM server for the run's model itself, waits until it is healthy, and stops it at exit (and,
    on Linux, when the trainer is killed)."""

    engine: Literal["in_process", "server", "serve", "vllm"] = "in_process"
    urls: tuple[str, ...] = ()  # OpenAI-compatible base URLs, e.g. http://127.0.0.1:8000/v1
    base_model: str | None = None  # the servers' name for the base model (default: the run's model)
    adapter_name: str = "mathrl-policy"  # the name the published adapter is served under
    concurrency: int = 16  # requests in flight per server (a key, if the servers want one: $OPENAI_API_KEY)
    # One GPU for both: the servers sleep (free their memory) while the trainer steps, and wake
    # before the next publish. Needs sleep mode (vLLM: --enable-sleep-mode; not on its CPU build).
    sleep_while_training: bool = False
    # A started engine: its port (0: a free one), and for vLLM its Python (default
    # $MATHRL_VLLM_PYTHON, else this one), GPU memory share, largest LoRA rank (default the
    # run's) and any further flags (the CPU build's: --dtype float32 --enforce-eager ...).
    port: int = 0
    vllm_python: str | None = None
    gpu_memory_utilization: float = 0.45
    max_lora_rank: int | None = None
    vllm_args: tuple[str, ...] = ()

    def __post_init__(self):
        if self.engine not in ENGINES:
            raise ValueError(f"rollout.engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        if self.engine == "server" and not self.urls:
            raise ValueError("rollout.engine 'server' needs rollout.urls (one or more base URLs)")
        if self.engine in ("serve", "vllm") and self.urls:
            raise ValueError(f"rollout.engine '{self.engine}' starts its own server: leave rollout.urls "
                             "empty (or use engine 'server' for servers you started)")


@dataclass(frozen=True)
class PolicyRef:
    """Weights after ``version`` optimizer steps; ``path`` is the published folder, a LoRA
    adapter or (full fine-tuning) the whole model's weights; None when the engine samples the
    trained module itself."""

    version: int
    path: Path | None = None
    kind: Literal["adapter", "weights"] = "adapter"


class RolloutEngine(Protocol):
    version: int | None  # the policy version loaded, None before the first load

    def load(self, ref: PolicyRef) -> None: ...

    def sleep(self) -> None: ...

    def wake(self) -> None: ...

    def sample(self, prompts: Sequence[list[int]], n: int,
               params: SamplingParams) -> list[list[Completion]]: ...


class RolloutError(UserError):
    """An engine returned something the trainer cannot train on."""


class InProcessRollouts:
    """Samples the trained module in this process: it *is* the newest policy."""

    needs_weights = False

    def __init__(self, model, tokenizer, batch_size: int):
        from mathrl.sampling.hf import HFSampler

        self.sampler = HFSampler(model, tokenizer, batch_size=batch_size)
        self.version: int | None = None

    def load(self, ref: PolicyRef) -> None:
        self.version = ref.version

    def sleep(self) -> None:
        pass  # the trainer's own module: nothing to free

    def wake(self) -> None:
        pass

    def sample(self, prompts: Sequence[list[int]], n: int, params: SamplingParams) -> list[list[Completion]]:
        model = self.sampler.model
        was_training = model.training
        model.eval()
        try:
            return self.sampler.sample(list(prompts), n, params)
        finally:
            model.train(was_training)


class ServerRollouts:
    """Samples OpenAI-compatible servers that load each published adapter (or, full fine-tuning,
    the whole weights) at run time."""

    needs_weights = True

    def __init__(self, settings: RolloutSettings, base_model: str, owner: bool = True):
        from mathrl.sampling.openai import OpenAISampler

        # A pool shared by several trainer processes is loaded, put to sleep and woken by one.
        self.settings, self.owner = settings, owner
        key = os.environ.get("OPENAI_API_KEY")  # never in the recipe: config.yaml is written to the run
        self.base_model = settings.base_model or base_model
        self.clients = [OpenAISampler(url, self.base_model, api_key=key,
                                      concurrency=settings.concurrency) for url in settings.urls]
        self.version: int | None = None
        self.asleep = False

    def sleep(self) -> None:
        """Free the servers' memory for the trainer's step (``sleep_while_training``)."""
        if self.settings.sleep_while_training:
            self._control(lambda c: c.post_root("/sleep?level=1", {}))
            self.asleep = True

    def wake(self) -> None:
        if self.asleep:
            self._control(lambda c: c.post_root("/wake_up", {}))
            self.asleep = False

    def _control(self, call) -> None:
        """A control call (load, reset, sleep, wake) on every server, made by their owner alone."""
        if not self.owner:
            return
        with ThreadPoolExecutor(len(self.clients)) as pool:
            list(pool.map(call, self.clients))

    def load(self, ref: PolicyRef) -> None:
        if ref.path is None:
            raise RolloutError("a server engine needs published weights (an adapter folder)")
        self.wake()
        if ref.kind == "weights":
            self._control(lambda c: _load_weights(c, ref.path))
            name = self.base_model
        else:
            body = {"lora_name": self.settings.adapter_name, "lora_path": str(ref.path.resolve()),
                    "load_inplace": True}
            self._control(lambda c: c.post_root("/v1/load_lora_adapter", body))
            name = self.settings.adapter_name
        self._control(_reset_prefix_cache)
        for client in self.clients:
            client.model = name
        self.version = ref.version

    def sample(self, prompts: Sequence[list[int]], n: int, params: SamplingParams) -> list[list[Completion]]:
        if params.greedy and n > 1:
            # vLLM refuses greedy requests with n > 1; greedy samples are one sequence anyway.
            return [group * n for group in self.sample(prompts, 1, params)]
        shards = [list(range(i, len(prompts), len(self.clients))) for i in range(len(self.clients))]
        out: list[list[Completion] | None] = [None] * len(prompts)
        with ThreadPoolExecutor(len(self.clients)) as pool:
            results = pool.map(lambda c, idx: c.sample([prompts[i] for i in idx], n, params),
                               self.clients, shards)
            for client, idx, groups in zip(self.clients, shards, results, strict=True):
                for i, group in zip(idx, groups, strict=True):
                    out[i] = [_checked(c, client.base_url) for c in group]
        return out  # type: ignore[return-value]


def _load_weights(client, path: Path) -> None:
    """Full fine-tuning's publish on one server: ``mathrl serve``'s ``/v1/load_weights``."""
    _post_needed(client, "/v1/load_weights", {"path": str(path.resolve())},
                 "cannot load full weights from a folder (vLLM has no stable endpoint for it): full "
                 "fine-tuning rolls out in process or through mathrl serve (rollout.engine: serve)")


def _reset_prefix_cache(client) -> None:
    """Drop cached prompt blocks: an adapter replaced in place keeps its name and id, so blocks
    computed with the old weights would otherwise be served for the new ones."""
    _post_needed(client, "/reset_prefix_cache", {},
                 "has no /reset_prefix_cache, so its prefix cache could serve blocks of the previous "
                 "weights: start vLLM with VLLM_SERVER_DEV_MODE=1 (which also enables /sleep and "
                 "/wake_up), or with --no-enable-prefix-caching")


def _post_needed(client, path: str, body: dict, missing: str) -> None:
    """POST a control call the run cannot do without; a server without the route says why."""
    from mathrl.sampling.openai import SamplerError

    try:
        client.post_root(path, body)
    except SamplerError as err:
        if "HTTP 404" not in str(err):
            raise
        raise RolloutError(f"{client.base_url} {missing}") from None


def _checked(c: Completion, url: str) -> Completion:
    """A completion the loss can use: token ids, and one logprob per token."""
    if not c.token_ids:
        raise RolloutError(f"{url} returned a completion without token ids; mathrl trains on the exact "
                           "tokens sampled (vLLM and mathrl serve return them with return_token_ids)")
    if len(c.logprobs) != len(c.token_ids):
        raise RolloutError(f"{url} returned {len(c.logprobs)} logprobs for {len(c.token_ids)} tokens; "
                           "mathrl needs the sampled token's logprob at every position (logprobs: 1)")
    return c


@contextlib.contextmanager
def rollout_engine(settings: RolloutSettings, model, tokenizer, base_model: str, batch_size: int,
                   lora_rank: int, log=print, dist: Dist = SINGLE):
    """The engine a run samples with; a server it starts lives exactly as long as the block.

    Under torchrun: ``in_process`` samples each rank's replica; ``server`` gives each rank its
    own servers when there are at least as many URLs as ranks (``urls[rank::world_size]``), else
    every rank shares them all and rank 0 alone loads them; ``serve`` and ``vllm`` start one
    engine per rank, on ``port + LOCAL_RANK`` and the rank's GPU."""
    if settings.engine == "in_process":
        yield InProcessRollouts(model, tokenizer, batch_size)
        return
    if settings.engine == "server":
        if dist.enabled and len(settings.urls) >= dist.world_size:
            mine = settings.urls[dist.rank::dist.world_size]
            yield ServerRollouts(replace(settings, urls=mine), base_model)
        else:
            yield ServerRollouts(settings, base_model, owner=dist.main)
        return
    if dist.enabled and settings.port:
        settings = replace(settings, port=settings.port + dist.local_rank)
    process, url = _start_engine(settings, base_model, lora_rank, log, dist)
    try:
        yield ServerRollouts(replace(settings, engine="server", urls=(url,)), base_model)
    finally:
        stop(process, grace_s=30)


def _start_engine(settings: RolloutSettings, base_model: str, lora_rank: int,
                  log, dist: Dist = SINGLE) -> tuple[subprocess.Popen, str]:
    from mathrl.models import resolve_model

    port = settings.port or _free_port()
    if settings.engine == "serve":
        command = [sys.executable, "-m", "mathrl.cli", "serve", "--model", base_model, "--enable-lora",
                   "--port", str(port), "--exit-with-parent"]
        env = dict(os.environ)
    else:
        python = settings.vllm_python or os.environ.get("MATHRL_VLLM_PYTHON") or sys.executable
        command = [python, "-m", "vllm.entrypoints.openai.api_server", "--model", resolve_model(base_model),
                   "--served-model-name", base_model, "--port", str(port), "--enable-lora",
                   "--max-lora-rank", str(settings.max_lora_rank or lora_rank),
                   "--logprobs-mode", "processed_logprobs",
                   "--gpu-memory-utilization", str(settings.gpu_memory_utilization), *settings.vllm_args]
        if settings.sleep_while_training:
            command.append("--enable-sleep-mode")
        env = {**os.environ, "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True", "VLLM_SERVER_DEV_MODE": "1"}
    if dist.enabled and dist.device.type == "cuda":  # the engine shares its rank's GPU
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")
        mapped = len(visible) > dist.local_rank and visible[0]
        env["CUDA_VISIBLE_DEVICES"] = visible[dist.local_rank] if mapped else str(dist.local_rank)
    log(f"rollout engine: starting {' '.join(command)}")
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               preexec_fn=die_with_parent)
    url = f"http://127.0.0.1:{port}"
    while True:  # up when healthy; a failed start is an exit, whatever the machine's speed
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=5):
                break
        except OSError:
            if process.poll() is not None:
                raise RolloutError(f"the rollout engine exited with status {process.returncode} before "
                                   f"it was healthy: {' '.join(command)}") from None
            time.sleep(1)
    log(f"rollout engine: {url}/v1")
    return process, f"{url}/v1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def publish(model, out_dir: Path, version: int, needs_weights: bool,
            full_weights: Callable[[], dict | None] | None = None, dist: Dist = SINGLE) -> PolicyRef:
    """The trainer's side: the reference an engine loads. For an engine that samples the trained
    module nothing is written; else the LoRA adapter (or, full fine-tuning, the whole model: a
    model's size on disk each step, the last two kept) is saved to a temporary folder renamed into
    place, so a server never reads half a file, and older versions are removed.

    Under torchrun every rank calls it: ``full_weights`` gathers FSDP's shards (a collective),
    rank 0 writes, and no rank returns before the folder is in place."""
    if not needs_weights:
        return PolicyRef(version)
    weights = full_weights() if full_weights else None
    kind = "adapter" if hasattr(model, "peft_config") else "weights"
    root = out_dir / PUBLISHED_DIR
    final = root / f"step_{version:06d}"
    if dist.main and not final.is_dir():
        root.mkdir(parents=True, exist_ok=True)
        tmp = root / f".step_{version:06d}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp, state_dict=weights)
        tmp.rename(final)
    if dist.main:
        for old in sorted(p for p in root.glob("step_*") if p.is_dir())[:-KEEP_PUBLISHED]:
            shutil.rmtree(old, ignore_errors=True)
    dist.barrier()
    return PolicyRef(version, final, kind)
