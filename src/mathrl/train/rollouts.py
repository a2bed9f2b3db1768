"""The seam between trainer and rollouts: sync -> sample (then grade -> train).

An engine owns its sync: ``engine.sync(version, learner)`` makes the engine sample the weights
of ``version`` (the learner publishes them if the engine needs a copy, the engine loads them,
and no rank goes on before every engine has them). Prompts are token ids encoded by the
trainer's tokenizer, and every completion must come back with its token ids and their logprobs
(the loss needs both): an engine that omits them fails the run with one message.

Engines:

- :class:`InProcessRollouts` samples the very module being trained (the default; CPU and
  tests). Its weights are always the newest, so its sync writes nothing and costs nothing.
- :class:`ServerRollouts` samples one or more OpenAI-compatible servers that load published
  weights at run time: ``mathrl serve --enable-lora``, vLLM (``--enable-lora``,
  ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=1``, ``--logprobs-mode processed_logprobs`` so its logprobs
  are those of the distribution it sampled), or SGLang. Each server kind's control routes (load
  an adapter in place, load whole weights, drop the prefix cache, sleep and wake) live in one
  :class:`ServerControl` of :data:`CONTROLS`; a new kind is a class and a line there. Requests
  name the adapter and are spread across the servers, prompt by prompt. The servers are ones
  the user started (``engine: server``) or one mathrl starts for the run and stops after it
  (``engine: serve`` or ``vllm``).

Under torchrun every rank calls ``sample`` with the whole batch's prompts: each rank samples
its share on its own engine (or its share of a pool) and the completions are gathered, so every
rank returns the whole batch, as one process would have sampled it.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, Protocol

import torch

from mathrl.distributed import SINGLE, Dist
from mathrl.errors import UserError
from mathrl.processes import die_with_parent, stop
from mathrl.sampling import Sampler, SamplingParams, encode_prompt
from mathrl.train.learner import Learner, PolicyRef
from mathrl.types import Completion

ENGINES = ("in_process", "server", "serve", "vllm")


@dataclass(frozen=True)
class ServerSettings:
    """``engine: server``: servers the user started."""

    urls: tuple[str, ...] = ()  # OpenAI-compatible base URLs, e.g. http://127.0.0.1:8000/v1
    kind: str = "vllm"  # whose control routes (CONTROLS: vllm, which mathrl serve speaks too; sglang)


@dataclass(frozen=True)
class VLLMSettings:
    """``engine: vllm``: the vLLM server mathrl starts. ``python`` default $MATHRL_VLLM_PYTHON,
    else this one; ``max_lora_rank`` default the run's; ``args``: any further flags (the CPU
    build's: --dtype float32 --enforce-eager ...)."""

    python: str | None = None
    gpu_memory_utilization: float = 0.45
    max_lora_rank: int | None = None
    args: tuple[str, ...] = ()


@dataclass(frozen=True)
class ServeSettings:
    """``engine: serve``: the ``mathrl serve`` mathrl starts; ``args``: further flags."""

    args: tuple[str, ...] = ()


@dataclass(frozen=True)
class RolloutSettings:
    """Where GRPO samples. ``in_process`` (default): the trained module. ``server``: running
    servers (``server.urls``). ``serve`` / ``vllm``: mathrl starts ``mathrl serve --enable-lora`` or
    a vLLM server for the run's model itself, waits until it is healthy, and stops it at exit
    (and, on Linux, when the trainer is killed). Each engine's own settings nest under its name."""

    engine: Literal["in_process", "server", "serve", "vllm"] = "in_process"
    base_model: str | None = None  # the servers' name for the base model (default: the run's model)
    adapter_name: str = "mathrl-policy"  # the name the published adapter is served under
    concurrency: int = 16  # requests in flight per server (a key, if the servers want one: $OPENAI_API_KEY)
    # One GPU for both: the servers sleep (free their memory) while the trainer steps, and wake
    # before the next publish. Needs sleep mode (vLLM: --enable-sleep-mode; not on its CPU build).
    sleep_while_training: bool = False
    port: int = 0  # a started engine's port (0: a free one)
    # Batches sampled ahead while the learner trains (mathrl.train.ahead): 0 samples each step
    # with the weights it trains (synchronous); N >= 1 lets a step train on rollouts of up to N
    # optimizer steps before, corrected with truncated importance sampling.
    max_staleness: int = 0
    server: ServerSettings = field(default_factory=ServerSettings)
    serve: ServeSettings = field(default_factory=ServeSettings)
    vllm: VLLMSettings = field(default_factory=VLLMSettings)

    # Keys of the flat layout before engines' settings nested under their names.
    RENAMED = {"urls": "server.urls", "vllm_python": "vllm.python",
               "gpu_memory_utilization": "vllm.gpu_memory_utilization",
               "max_lora_rank": "vllm.max_lora_rank", "vllm_args": "vllm.args"}

    def __post_init__(self):
        if self.engine not in ENGINES:
            raise ValueError(f"rollout.engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        if self.engine == "server" and not self.server.urls:
            raise ValueError("rollout.engine 'server' needs rollout.server.urls (one or more base URLs)")
        if self.engine != "server" and self.server.urls:
            raise ValueError(f"rollout.engine '{self.engine}' does not use rollout.server.urls (engine "
                             "'server' samples servers you started)")
        if self.server.kind not in CONTROLS:
            raise ValueError(f"rollout.server.kind must be one of {', '.join(CONTROLS)}")
        if self.max_staleness < 0:
            raise ValueError(f"rollout.max_staleness must be >= 0, got {self.max_staleness}")
        if self.max_staleness and self.engine == "in_process":
            raise ValueError("rollout.max_staleness >= 1 samples while the learner trains, which needs an "
                             "engine in its own process (rollout.engine: serve, vllm or server): in process, "
                             "the same module and device cannot sample and train at once")
        if self.max_staleness and self.sleep_while_training:
            raise ValueError("rollout.max_staleness >= 1 samples while the learner trains, and rollout."
                             "sleep_while_training puts the engine to sleep then: use one or the other")


class RolloutEngine(Protocol):
    version: int | None  # the policy version it samples, None before the first sync

    def sync(self, version: int, learner: Learner) -> None:
        """Sample the weights of ``version`` from now on (a collective under torchrun)."""
        ...

    def sample(self, prompts: Sequence[list[int]], n: int,
               params: SamplingParams) -> list[list[Completion]]:
        """``n`` completions of each prompt (the whole batch, on every rank)."""
        ...

    def pause(self) -> None:
        """The trainer steps now: free what the engine can (its next sync wakes it)."""
        ...

    def sampler(self, batch_size: int) -> Sampler:
        """A sampler of the synced weights for this process alone (evaluations on rank 0)."""
        ...


class RolloutError(UserError):
    """An engine returned something the trainer cannot train on."""


def gather_samples(dist: Dist, prompts: Sequence[list[int]], sample) -> list[list[Completion]]:
    """``sample(prompts)`` of the whole batch, each rank sampling its contiguous share and every
    rank receiving every share."""
    if not dist.enabled:
        return sample(list(prompts))
    mine = dist.share(len(prompts))
    return [group for part in dist.gather(sample([prompts[i] for i in mine])) for group in part]


class InProcessRollouts:
    """Samples the trained module in this process: it *is* the newest policy."""

    def __init__(self, learner: Learner, batch_size: int, dist: Dist = SINGLE):
        self.learner, self.dist = learner, dist
        self.local = learner.sampler(batch_size)
        self.version: int | None = None

    def sync(self, version: int, learner: Learner) -> None:
        self.version = version

    def pause(self) -> None:
        pass  # the trainer's own module: nothing to free

    def sample(self, prompts: Sequence[list[int]], n: int, params: SamplingParams) -> list[list[Completion]]:
        # A sharded (FSDP) model samples apart from the other ranks: whole weights for the block.
        with self.learner.gathered():
            return gather_samples(self.dist, prompts, lambda mine: self.local.sample(mine, n, params))

    def sampler(self, batch_size: int) -> Sampler:
        return self.learner.sampler(batch_size)


class ServerControl:
    """vLLM's control routes, which ``mathrl serve`` also speaks (and, for full fine-tuning,
    ``mathrl serve``'s ``/v1/load_weights``)."""

    def load_adapter(self, client, name: str, path: Path) -> None:
        client.post_root("/v1/load_lora_adapter", {"lora_name": name, "lora_path": str(path.resolve()),
                                                   "load_inplace": True})

    def load_weights(self, client, path: Path) -> None:
        _post_needed(client, "/v1/load_weights", {"path": str(path.resolve())},
                     "cannot load full weights from a folder (vLLM has no stable endpoint for it): full "
                     "fine-tuning rolls out in process or through mathrl serve (rollout.engine: serve)")

    def reset_cache(self, client) -> None:
        """Drop cached prompt blocks: an adapter replaced in place keeps its name and id, so blocks
        computed with the old weights would otherwise be served for the new ones."""
        _post_needed(client, "/reset_prefix_cache", {},
                     "has no /reset_prefix_cache, so its prefix cache could serve blocks of the previous "
                     "weights: start vLLM with VLLM_SERVER_DEV_MODE=1 (which also enables /sleep and "
                     "/wake_up), or with --no-enable-prefix-caching")

    def sleep(self, client) -> None:
        client.post_root("/sleep?level=1", {})

    def wake(self, client) -> None:
        client.post_root("/wake_up", {})


class SGLangControl(ServerControl):
    """SGLang's routes: an adapter is replaced by unloading and loading it under the same name
    (SGLang has no in-place load); whole weights from a folder; its radix cache flushed."""

    def load_adapter(self, client, name: str, path: Path) -> None:
        with contextlib.suppress(UserError):  # not loaded yet: nothing to unload
            client.post_root("/unload_lora_adapter", {"lora_name": name})
        client.post_root("/load_lora_adapter", {"lora_name": name, "lora_path": str(path.resolve())})

    def load_weights(self, client, path: Path) -> None:
        client.post_root("/update_weights_from_disk", {"model_path": str(path.resolve())})

    def reset_cache(self, client) -> None:
        client.post_root("/flush_cache", {})

    def sleep(self, client) -> None:
        client.post_root("/release_memory_occupation", {})

    def wake(self, client) -> None:
        client.post_root("/resume_memory_occupation", {})


CONTROLS: dict[str, type[ServerControl]] = {"vllm": ServerControl, "sglang": SGLangControl}


class ServerRollouts:
    """Samples OpenAI-compatible servers that load each published adapter (or, full fine-tuning,
    the whole weights) at run time. ``owner``: this process makes the control calls (a pool
    shared by several trainer processes is loaded, put to sleep and woken by one)."""

    def __init__(self, settings: RolloutSettings, urls: Sequence[str], base_model: str, owner: bool = True,
                 kind: str = "vllm", dist: Dist = SINGLE, tokenizer=None):
        from mathrl.sampling.openai import OpenAISampler

        self.settings, self.owner, self.dist = settings, owner, dist
        self.tokenizer = tokenizer  # evaluations send chat prompts rendered as the training prompts are
        self.control = CONTROLS[kind]()
        key = os.environ.get("OPENAI_API_KEY")  # never in the recipe: config.yaml is written to the run
        self.base_model = settings.base_model or base_model
        self.clients = [OpenAISampler(url, self.base_model, api_key=key,
                                      concurrency=settings.concurrency) for url in urls]
        self.version: int | None = None
        self.asleep = False

    def sync(self, version: int, learner: Learner) -> None:
        """Publish (a collective: every rank calls it), load on every server, then wait until
        every rank's engine has it: a pool shared by the ranks is loaded before anyone samples."""
        if self.version == version:
            return
        self.load(learner.save_for_sampler(version))
        self.dist.barrier()

    def pause(self) -> None:
        """Free the servers' memory for the trainer's step (``sleep_while_training``), once every
        rank has its samples (``sample`` returned: the gather waited for all)."""
        if self.settings.sleep_while_training:
            self._control(self.control.sleep)
            self.asleep = True

    def wake(self) -> None:
        if self.asleep:
            self._control(self.control.wake)
            self.asleep = False

    def _control(self, call) -> None:
        """A control call on every server, made by their owner alone."""
        if not self.owner:
            return
        with ThreadPoolExecutor(len(self.clients)) as pool:
            list(pool.map(call, self.clients))

    def load(self, ref: PolicyRef) -> None:
        if ref.path is None:
            raise RolloutError("a server engine needs published weights (an adapter folder)")
        self.wake()
        if ref.kind == "weights":
            self._control(lambda c: self.control.load_weights(c, ref.path))
            name = self.base_model
        else:
            self._control(lambda c: self.control.load_adapter(c, self.settings.adapter_name, ref.path))
            name = self.settings.adapter_name
        self._control(self.control.reset_cache)
        for client in self.clients:
            client.model = name
        self.version = ref.version

    def sample(self, prompts: Sequence[list[int]], n: int, params: SamplingParams) -> list[list[Completion]]:
        return gather_samples(self.dist, prompts, lambda mine: self.sample_here(mine, n, params))

    def sample_here(self, prompts: Sequence[list[int]], n: int,
                    params: SamplingParams) -> list[list[Completion]]:
        """This process's prompts, spread over its servers."""
        if params.greedy and n > 1:
            # vLLM refuses greedy requests with n > 1; greedy samples are one sequence anyway.
            return [group * n for group in self.sample_here(prompts, 1, params)]
        shards = [list(range(i, len(prompts), len(self.clients))) for i in range(len(self.clients))]
        out: list[list[Completion] | None] = [None] * len(prompts)
        with ThreadPoolExecutor(len(self.clients)) as pool:
            results = pool.map(lambda c, idx: c.sample([prompts[i] for i in idx], n, params),
                               self.clients, shards)
            for client, idx, groups in zip(self.clients, shards, results, strict=True):
                for i, group in zip(idx, groups, strict=True):
                    out[i] = [_checked(c, client.base_url) for c in group]
        return out  # type: ignore[return-value]

    def sampler(self, batch_size: int) -> Sampler:
        return TokenSampler(self.sample_here, self.tokenizer)


class TokenSampler:
    """A :class:`~mathrl.sampling.Sampler` over an engine's token-id sampling: chat prompts are
    rendered with the trainer's template, as the training prompts are."""

    def __init__(self, sample_ids, tokenizer):
        self.sample_ids, self.tokenizer = sample_ids, tokenizer

    def sample(self, prompts, n: int, params: SamplingParams) -> list[list[Completion]]:
        ids = [list(p) if p and isinstance(p[0], int)
               else encode_prompt(self.tokenizer, p, params.enable_thinking) for p in prompts]
        return self.sample_ids(ids, n, params)


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
def rollout_engine(settings: RolloutSettings, learner: Learner, base_model: str, batch_size: int,
                   lora_rank: int, log=print, dist: Dist = SINGLE):
    """The engine a run samples with; a server it starts lives exactly as long as the block, and
    a user's servers are left awake, as they were found.

    Under torchrun: ``in_process`` samples each rank's replica; ``server`` gives each rank its
    own servers when there are at least as many URLs as ranks (``urls[rank::world_size]``), else
    every rank shares them all and rank 0 alone loads them; ``serve`` and ``vllm`` start one
    engine per rank, on ``port + LOCAL_RANK`` and the rank's GPU."""
    if settings.engine == "in_process":
        yield learner.rollouts(batch_size, dist)
        return
    process = None
    if settings.engine == "server":
        urls, kind = settings.server.urls, settings.server.kind
        owner = True
        if dist.enabled and len(urls) >= dist.world_size:
            urls = urls[dist.rank::dist.world_size]
        else:
            owner = dist.main
            if dist.enabled and settings.max_staleness:
                # Rank 0 alone loads a shared pool, so the others could not know which version
                # their samples are of while it loads between batches.
                raise UserError(f"rollout.max_staleness >= 1 under torchrun needs an engine per rank: "
                                f"{len(urls)} rollout.server.urls for {dist.world_size} ranks (or "
                                "rollout.engine: serve / vllm, which start one per rank)")
    threads = torch.get_num_threads()
    engine_threads = None
    if settings.engine in ("serve", "vllm") and settings.max_staleness and dist.device.type == "cpu":
        # Engine and trainer now compute at the same time on the same cores: each gets its share
        # (oversubscribed, each ran 2-3x slower: 8.9 s a step against 5.3 synchronous, on 2 cores).
        cores = max(2, len(os.sched_getaffinity(0)) // dist.world_size)
        engine_threads = cores // 2
        torch.set_num_threads(cores - engine_threads)
        log(f"rollout engine: {engine_threads} of {cores} CPU threads, the trainer the other "
            f"{cores - engine_threads} (sampling overlaps training)")
    if settings.engine != "server":
        if dist.enabled and settings.port:
            settings = replace(settings, port=settings.port + dist.local_rank)
        process, url = _start_engine(settings, base_model, lora_rank, log, dist, engine_threads, batch_size)
        urls, kind, owner = (url,), "vllm", True
    try:
        engine = ServerRollouts(settings, urls, base_model, owner=owner, kind=kind, dist=dist,
                                tokenizer=learner.tokenizer)
        yield engine
        engine.wake()
    finally:
        torch.set_num_threads(threads)
        if process is not None:
            stop(process, grace_s=30)


def _start_engine(settings: RolloutSettings, base_model: str, lora_rank: int, log, dist: Dist = SINGLE,
                  threads: int | None = None, batch_size: int = 64) -> tuple[subprocess.Popen, str]:
    from mathrl.models import resolve_model

    port = settings.port or _free_port()
    if settings.engine == "serve":
        # It decodes as many sequences together as the in-process sampler would (sampler_batch_size).
        command = [sys.executable, "-m", "mathrl.cli", "serve", "--model", base_model, "--enable-lora",
                   "--port", str(port), "--batch-size", str(batch_size), "--exit-with-parent",
                   *settings.serve.args]
        env = dict(os.environ)
    else:
        vllm = settings.vllm
        python = vllm.python or os.environ.get("MATHRL_VLLM_PYTHON") or sys.executable
        command = [python, "-m", "vllm.entrypoints.openai.api_server", "--model", resolve_model(base_model),
                   "--served-model-name", base_model, "--port", str(port), "--enable-lora",
                   "--max-lora-rank", str(vllm.max_lora_rank or lora_rank),
                   "--logprobs-mode", "processed_logprobs",
                   "--gpu-memory-utilization", str(vllm.gpu_memory_utilization), *vllm.args]
        if settings.sleep_while_training:
            command.append("--enable-sleep-mode")
        env = {**os.environ, "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True", "VLLM_SERVER_DEV_MODE": "1"}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
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
