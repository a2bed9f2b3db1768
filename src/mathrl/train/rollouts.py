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
  servers, prompt by prompt.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from mathrl.errors import UserError
from mathrl.sampling import SamplingParams
from mathrl.types import Completion

PUBLISHED_DIR = "published"
KEEP_PUBLISHED = 2  # the version being served and the one before it


@dataclass(frozen=True)
class RolloutSettings:
    """Where GRPO samples: ``engine: in_process`` (default) or ``server`` with ``urls``."""

    engine: Literal["in_process", "server"] = "in_process"
    urls: tuple[str, ...] = ()  # OpenAI-compatible base URLs, e.g. http://127.0.0.1:8000/v1
    base_model: str | None = None  # the servers' name for the base model (default: the run's model)
    adapter_name: str = "mathrl-policy"  # the name the published adapter is served under
    concurrency: int = 16  # requests in flight per server (a key, if the servers want one: $OPENAI_API_KEY)
    # One GPU for both: the servers sleep (free their memory) while the trainer steps, and wake
    # before the next publish. Needs sleep mode (vLLM: --enable-sleep-mode; not on its CPU build).
    sleep_while_training: bool = False

    def __post_init__(self):
        if self.engine not in ("in_process", "server"):
            raise ValueError(f"rollout.engine must be 'in_process' or 'server', got {self.engine!r}")
        if self.engine == "server" and not self.urls:
            raise ValueError("rollout.engine 'server' needs rollout.urls (one or more base URLs)")


@dataclass(frozen=True)
class PolicyRef:
    """Weights after ``version`` optimizer steps; ``path`` is the published folder (an adapter),
    None when the engine samples the trained module itself."""

    version: int
    path: Path | None = None


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
    """Samples OpenAI-compatible servers that load the published adapter at run time."""

    needs_weights = True

    def __init__(self, settings: RolloutSettings, base_model: str):
        from mathrl.sampling.openai import OpenAISampler

        self.settings = settings
        key = os.environ.get("OPENAI_API_KEY")  # never in the recipe: config.yaml is written to the run
        self.clients = [OpenAISampler(url, settings.base_model or base_model, api_key=key,
                                      concurrency=settings.concurrency) for url in settings.urls]
        self.version: int | None = None
        self.asleep = False

    def sleep(self) -> None:
        """Free the servers' memory for the trainer's step (``sleep_while_training``)."""
        if self.settings.sleep_while_training:
            self._each(lambda c: c.post_root("/sleep?level=1", {}))
            self.asleep = True

    def wake(self) -> None:
        if self.asleep:
            self._each(lambda c: c.post_root("/wake_up", {}))
            self.asleep = False

    def _each(self, call) -> None:
        with ThreadPoolExecutor(len(self.clients)) as pool:
            list(pool.map(call, self.clients))

    def load(self, ref: PolicyRef) -> None:
        if ref.path is None:
            raise RolloutError("a server engine needs published weights (an adapter folder)")
        self.wake()
        body = {"lora_name": self.settings.adapter_name, "lora_path": str(ref.path.resolve()),
                "load_inplace": True}
        self._each(lambda c: c.post_root("/v1/load_lora_adapter", body))
        self._each(_reset_prefix_cache)
        for client in self.clients:
            client.model = self.settings.adapter_name
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


def _reset_prefix_cache(client) -> None:
    """Drop cached prompt blocks: an adapter replaced in place keeps its name and id, so blocks
    computed with the old weights would otherwise be served for the new ones."""
    from mathrl.sampling.openai import SamplerError

    try:
        client.post_root("/reset_prefix_cache", {})
    except SamplerError as err:
        if "HTTP 404" not in str(err):
            raise
        raise RolloutError(f"{client.base_url}: no /reset_prefix_cache, so its prefix cache could serve "
                           "blocks of the previous weights: start vLLM with VLLM_SERVER_DEV_MODE=1 (which "
                           "also enables /sleep and /wake_up), or with --no-enable-prefix-caching") from None


def _checked(c: Completion, url: str) -> Completion:
    """A completion the loss can use: token ids, and one logprob per token."""
    if not c.token_ids:
        raise RolloutError(f"{url} returned a completion without token ids; mathrl trains on the exact "
                           "tokens sampled (vLLM and mathrl serve return them with return_token_ids)")
    if len(c.logprobs) != len(c.token_ids):
        raise RolloutError(f"{url} returned {len(c.logprobs)} logprobs for {len(c.token_ids)} tokens; "
                           "mathrl needs the sampled token's logprob at every position (logprobs: 1)")
    return c


def make_rollouts(settings: RolloutSettings, model, tokenizer, base_model: str, batch_size: int):
    if settings.engine == "server":
        return ServerRollouts(settings, base_model)
    return InProcessRollouts(model, tokenizer, batch_size)


def publish(model, out_dir: Path, version: int, needs_weights: bool) -> PolicyRef:
    """The trainer's side: the reference an engine loads. For an engine that samples the trained
    module nothing is written; else the LoRA adapter is saved (to a temporary folder renamed into
    place, so a server never reads half a file) and older versions beyond the last two removed."""
    if not needs_weights:
        return PolicyRef(version)
    if not hasattr(model, "peft_config"):
        raise UserError("publishing to a rollout server is implemented for LoRA (finetune: lora); full "
                        "fine-tuning rolls out in process")
    root = out_dir / PUBLISHED_DIR
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{version:06d}"
    if not final.is_dir():
        tmp = root / f".step_{version:06d}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp)
        tmp.rename(final)
    for old in sorted(p for p in root.glob("step_*") if p.is_dir())[:-KEEP_PUBLISHED]:
        shutil.rmtree(old, ignore_errors=True)
    return PolicyRef(version, final)


def staleness(group_versions: Sequence[int], step: int) -> float:
    """Mean optimizer steps between the weights that sampled each group and those it trains."""
    return sum(step - v for v in group_versions) / len(group_versions) if group_versions else 0.0
