"""``learner: tinker``: mathrl's SFT and GRPO loops on the Tinker service (or anything that speaks
its API, ``mathrl serve --tinker`` included), through the official SDK.

:class:`TinkerLearner` is the :class:`~mathrl.train.learner.Learner` seam over a training client:
``forward_backward`` and ``optim_step`` go to the service; ``save_state`` saves the training state
there and records its ``tinker://`` paths in the run folder's checkpoint (``tinker.json``, which
``final/`` keeps); ``save_for_sampler`` publishes the weights as a sampling client, which
:class:`TinkerRollouts` (the run's engine) samples. The key comes from ``$TINKER_API_KEY`` and is
never written anywhere.

Exact where Tinker can be: mathrl's per-token weights (its normalisations) are folded into the
datums: the ``weights`` of ``cross_entropy``, the ``advantages`` of the policy-gradient losses
(``importance_sampling``, ``ppo``, ``cispo``, which are linear in the advantage, so ``w x loss(A) =
loss(w x A)`` for ``w > 0``). Adam's settings map one to one. What Tinker has no equivalent for
is refused before anything runs (:func:`check_recipe`).

Calls in flight: ``forward_backward`` and ``optim_step`` return at once; their results are awaited
when read, so a step's calls are all queued at the service before the first result is waited
on; a step's prompts are all sampled concurrently. The time spent waiting on the service is
reported per step (``time/service_wait_s``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import shutil
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from mathrl.errors import UserError
from mathrl.sampling import SamplingParams, encode_prompt
from mathrl.sampling.hf import count_thinking_tokens
from mathrl.train.learner import AdamParams, Datum, ForwardBackward, PolicyRef
from mathrl.train.losses import Loss
from mathrl.types import Completion

STATE_FILE = "trainer_state.pt"  # what every checkpoint holds (mathrl.train.checkpoint)
RECORD = "tinker.json"  # the checkpoint's tinker:// paths; final/ keeps it
DEFAULT_URL = "https://tinker.thinkingmachines.dev/services/tinker-prod"
FOLDABLE = ("importance_sampling", "ppo", "cispo")  # linear in the advantage: weights fold into it
ATTENTION = {"q_proj", "k_proj", "v_proj", "o_proj"}
MLP = {"gate_proj", "up_proj", "down_proj"}
TINKER_ALPHA = 32


def _lora_problems(cfg) -> list[str]:
    problems = []
    if cfg.lora.alpha != TINKER_ALPHA:
        problems.append(f"lora.alpha: Tinker trains LoRA with alpha {TINKER_ALPHA} at any rank; set "
                        f"lora.alpha: {TINKER_ALPHA} (it is {cfg.lora.alpha}; unset means 2 x rank)")
    if cfg.lora.dropout:
        problems.append("lora.dropout: Tinker's LoRA has no dropout; set it to 0")
    targets = set(cfg.lora.target_modules)
    if targets != {"all-linear"} and (not targets <= ATTENTION | MLP | {"lm_head"}
                                      or targets & ATTENTION not in (set(), ATTENTION)
                                      or targets & MLP not in (set(), MLP)):
        problems.append("lora.target_modules: Tinker trains all attention layers, all MLP layers and/or the "
                        "unembedding (lm_head); list whole groups, or all-linear")
    return problems


def lora_flags(cfg) -> dict:
    """The recipe's LoRA as ``create_lora_training_client``'s arguments."""
    targets = set(cfg.lora.target_modules)
    if targets == {"all-linear"}:
        return {"rank": cfg.lora.rank, "train_attn": True, "train_mlp": True, "train_unembed": False}
    return {"rank": cfg.lora.rank, "train_attn": bool(targets & ATTENTION), "train_mlp": bool(targets & MLP),
            "train_unembed": "lm_head" in targets}


def check_recipe(cfg) -> None:
    """Refuse, naming every setting, what the Tinker service has no equivalent for."""
    problems = []
    if cfg.finetune != "lora":
        problems.append("finetune: the Tinker service trains LoRA adapters only; set finetune: lora")
    problems += _lora_problems(cfg)
    if getattr(cfg, "kl_coef", 0):
        problems.append("kl_coef: the Tinker service has no frozen reference model for a KL penalty; set "
                        "kl_coef: 0")
    if getattr(cfg, "tis_cap", None) is not None:
        problems.append("tis_cap: the Tinker service's losses have no truncated importance sampling")
    if getattr(cfg, "temperature", 1.0) != 1.0:
        problems.append("temperature: the Tinker service computes the trainer's log-probabilities at "
                        "temperature 1, so samples drawn at another temperature would not match them; set "
                        "temperature: 1.0")
    if hasattr(cfg, "make_loss"):
        name = cfg.make_loss().name
        if name not in FOLDABLE and cfg.normalization != "token_sum":
            problems.append(f"normalization: the weights of {cfg.normalization} cannot be folded into the "
                            f"advantages of loss {name} (not linear in them); use normalization: token_sum")
    rollout = getattr(cfg, "rollout", None)
    if rollout is not None and rollout.engine != "in_process":
        problems.append("rollout.engine: a Tinker run samples on the service, with the weights it trains; "
                        "leave rollout.engine as in_process")
    local = cfg.adapter and not cfg.adapter.startswith("tinker://") and Path(cfg.adapter).is_dir()
    if local and not (Path(cfg.adapter) / RECORD).is_file():
        problems.append(f"adapter: {cfg.adapter} is a local adapter; a Tinker run starts from a tinker:// "
                        f"path or a Tinker run's final/ (which holds {RECORD})")
    if problems:
        raise ValueError("learner: tinker cannot run this recipe:\n  " + "\n  ".join(problems))


def stop_token_ids(tokenizer) -> list[int]:
    """The ids a chat model ends its turn with: what the local sampler stops at, said explicitly
    (the service stops only where it is told to)."""
    ids = {tokenizer.eos_token_id}
    vocab = tokenizer.get_vocab()
    ids.update(vocab.get(t) for t in ("<|im_end|>", "<|endoftext|>"))
    return sorted(i for i in ids if i is not None)


def recorded_path(adapter: str, key: str, option: str) -> str:
    """The ``tinker://`` path an adapter setting names: itself, or the ``key`` ("state" to train
    from, "sampler" to sample) recorded in a Tinker run's final/ (``option`` names the setting in
    the error)."""
    if adapter.startswith("tinker://"):
        return adapter
    record = Path(adapter) / RECORD
    if not record.is_file():
        raise UserError(f"{option} {adapter}: no {RECORD} there; give a tinker:// path or a Tinker run's "
                        "final/")
    return json.loads(record.read_text())[key]


def _sdk():
    try:
        import tinker
    except ImportError:
        raise UserError("learner: tinker needs the tinker SDK: pip install 'mathrl[tinker]'") from None
    return tinker


def _url(base_url: str | None) -> str:
    return (base_url or os.environ.get("TINKER_BASE_URL") or DEFAULT_URL).rstrip("/")


def reachable(base_url: str | None) -> None:
    """One quick request before the SDK, whose retries take minutes to give up on a wrong URL."""
    url = _url(base_url)
    try:
        urllib.request.urlopen(f"{url}/api/v1/healthz", timeout=15).close()
    except urllib.error.HTTPError:
        return  # it answered
    except (OSError, ValueError) as err:
        raise UserError(f"cannot reach the Tinker service at {url}: {getattr(err, 'reason', err)} "
                        "(tinker.base_url, or $TINKER_BASE_URL)") from None


def service_error(err: BaseException, what: str) -> UserError:
    """One message for what the SDK raised while doing ``what``."""
    name = type(err).__name__
    status = getattr(err, "status_code", None)
    if "Authentication" in name or "PermissionDenied" in name or status in (401, 403):
        return UserError(f"the Tinker service refused the API key ($TINKER_API_KEY) while {what}")
    return UserError(f"the Tinker service failed while {what}: {name}: {err}")


def preflight(base_url: str | None) -> None:
    """The SDK is installed, the key is set and the service answers: checked before a run loads
    anything, so a missing key is one line, not a failure minutes in."""
    _sdk()
    if not os.environ.get("TINKER_API_KEY"):
        raise UserError("the Tinker service's key is read from $TINKER_API_KEY (never from a recipe); set it")
    reachable(base_url)


def service_client(base_url: str | None):
    """The SDK's service client, after :func:`preflight`."""
    tinker = _sdk()
    preflight(base_url)
    try:
        return tinker.ServiceClient(base_url=base_url)
    except Exception as err:  # noqa: BLE001 - the SDK's errors, as one message
        raise service_error(err, "opening a session") from None


@contextlib.contextmanager
def guarded(what: str):
    """The SDK's errors (raised when a call is made or when its future is read) as one message."""
    try:
        yield
    except UserError:
        raise
    except Exception as err:  # noqa: BLE001 - whatever the SDK raises
        raise service_error(err, what) from None


class _Waits:
    """Seconds spent blocked on the service since the last report."""

    def __init__(self):
        self.seconds = 0.0

    def wait(self, future, what: str):
        """``future``'s result (``future`` may be a function making the call)."""
        start = time.perf_counter()
        try:
            with guarded(what):
                return (future() if callable(future) else future).result()
        finally:
            self.seconds += time.perf_counter() - start

    def take(self) -> float:
        seconds, self.seconds = self.seconds, 0.0
        return seconds


class _Pending(ForwardBackward):
    """A ``forward_backward`` in flight: its result is awaited when first read."""

    def __init__(self, waits: _Waits, future, datums: Sequence[Datum]):
        self.__dict__.update(_waits=waits, _future=future, _datums=datums, _done=None)

    def _result(self) -> ForwardBackward:
        if self._done is None:
            self.__dict__["_done"] = _output(self._waits.wait(self._future, "running forward_backward"),
                                             self._datums)
        return self._done

    @property
    def metrics(self):
        return self._result().metrics

    @property
    def logprobs(self):
        return self._result().logprobs

    @property
    def elementwise_loss(self):
        return None


class _PendingStep(Mapping):
    """An ``optim_step`` in flight: its metrics, awaited when first read."""

    def __init__(self, waits: _Waits, future):
        self._waits, self._future, self._done = waits, future, None

    def _result(self) -> dict:
        if self._done is None:
            metrics = self._waits.wait(self._future, "running optim_step").metrics or {}
            self._done = {"time/service_wait_s": self._waits.take()}
            norm = next((v for k, v in metrics.items() if k.startswith("grad_norm")), None)
            if norm is not None:
                self._done["train/grad_norm"] = norm
        return self._done

    def __getitem__(self, key):
        return self._result()[key]

    def __iter__(self):
        return iter(self._result())

    def __len__(self):
        return len(self._result())


def _output(output, datums: Sequence[Datum]) -> ForwardBackward:
    logprobs = [tuple(o["logprobs"].tolist()) for o in output.loss_fn_outputs]
    metrics = {"train/loss": output.metrics.get("loss:sum", math.nan), "train/sequences": len(datums),
               "train/tokens": sum(d.n_loss_tokens for d in datums),
               "train/micro_batches": 1}  # one call; how the service cuts it is its own
    k1 = [s - t for d, lp in zip(datums, logprobs, strict=True) if d.logprobs is not None
          for s, t, w in zip(d.logprobs, lp, d.weights or [1.0] * len(lp), strict=True) if w]
    if k1:
        metrics["train/kl_sampler_trainer"] = sum(k1) / len(k1)
    return ForwardBackward(metrics, logprobs)


class TinkerLearner:
    """A training client of the Tinker service as mathrl's learner (see the module docstring)."""

    def __init__(self, cfg, tokenizer, out_dir: Path, dist=None):
        if dist is not None and dist.enabled:
            raise UserError("learner: tinker trains on the service from one process; run it without torchrun")
        check_recipe(cfg)
        self.tinker = _sdk()
        self.cfg, self.tokenizer, self.out_dir = cfg, tokenizer, Path(out_dir)
        self.base_model = cfg.tinker.model or cfg.model
        self.flags = lora_flags(cfg)
        self.waits = _Waits()
        self.service = service_client(cfg.tinker.base_url)
        if cfg.adapter:
            path = recorded_path(cfg.adapter, "state", "adapter:")
            self.client = self.waits.wait(lambda: self.service.create_training_client_from_state(path),
                                          f"loading the adapter {path}")
        else:
            self.client = self.waits.wait(lambda: self.service.create_lora_training_client(
                base_model=self.base_model, seed=cfg.seed, **self.flags), "creating the training client")
        self.sampling_client = None

    def describe(self) -> str:
        return (f"Tinker at {_url(self.cfg.tinker.base_url)}: LoRA rank {self.flags['rank']} (alpha "
                f"{TINKER_ALPHA}) on {self.base_model}")

    def _datums(self, datums: Sequence[Datum], loss: Loss) -> list:
        if loss.kl_coef or loss.tis_cap is not None:
            raise UserError("the Tinker service's losses have no KL penalty or truncated importance sampling")
        out = []
        for d in datums:
            weights = d.weights or (1.0,) * len(d.model_input)
            inputs: dict = {"target_tokens": list(d.target_tokens)}
            if loss.name == "cross_entropy":
                inputs["weights"] = list(weights)
            else:
                inputs["logprobs"] = list(d.logprobs)
                inputs["advantages"] = [a * w for a, w in zip(d.advantages, weights, strict=True)]
            out.append(self.tinker.Datum(model_input=self.tinker.ModelInput.from_ints(list(d.model_input)),
                                         loss_fn_inputs=inputs))
        return out

    def _config(self, loss: Loss) -> dict | None:
        return dict(loss.config) or None

    def forward(self, datums: Sequence[Datum], loss: Loss, return_logprobs: bool = True) -> ForwardBackward:
        inputs = self._datums(datums, loss)
        return _output(self.waits.wait(lambda: self.client.forward(inputs, loss.name,
                                                                   loss_fn_config=self._config(loss)),
                                       "running forward"), datums)

    def forward_backward(self, datums: Sequence[Datum], loss: Loss,
                         return_logprobs: bool = False) -> ForwardBackward:
        with guarded("running forward_backward"):
            future = self.client.forward_backward(self._datums(datums, loss), loss.name,
                                                  loss_fn_config=self._config(loss))
        return _Pending(self.waits, future, datums)

    def optim_step(self, adam: AdamParams) -> Mapping[str, float]:
        with guarded("running optim_step"):
            future = self.client.optim_step(self.tinker.AdamParams(
                learning_rate=adam.learning_rate, beta1=adam.beta1, beta2=adam.beta2, eps=adam.eps,
                weight_decay=adam.weight_decay, grad_clip_norm=adam.grad_clip_norm))
        return _PendingStep(self.waits, future)

    def save_for_sampler(self, version: int) -> PolicyRef:
        self.sampling_client = self.waits.wait(self.client.save_weights_and_get_sampling_client,
                                               "publishing the weights for sampling")
        return PolicyRef(version)

    def save_state(self, folder: Path, extra: dict) -> None:
        """The training state (and sampler weights) saved on the service; their paths and
        ``extra`` in ``folder``, written whole or not at all."""
        folder = Path(folder)
        state = self.waits.wait(lambda: self.client.save_state(folder.name), "saving the training state").path
        sampler = self.waits.wait(lambda: self.client.save_weights_for_sampler(folder.name),
                                  "saving the sampler weights").path
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        record = {"base_model": self.base_model, "state": state, "sampler": sampler, "lora": self.flags}
        (tmp / RECORD).write_text(json.dumps(record, indent=2) + "\n")
        torch.save({"tinker": record, **extra}, tmp / STATE_FILE)
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)

    def load_state(self, folder: Path) -> dict:
        state = torch.load(Path(folder) / STATE_FILE, weights_only=False)
        path = state.pop("tinker")["state"]
        load = self.service.create_training_client_from_state_with_optimizer
        self.client = self.waits.wait(lambda: load(path), f"loading the training state {path}")
        self.sampling_client = None
        return state

    def rollouts(self, batch_size: int, dist=None) -> TinkerRollouts:
        return TinkerRollouts(self)

    def sampler(self, batch_size: int) -> TinkerSampler:
        self.save_for_sampler(-1)
        return TinkerSampler(lambda: self.sampling_client, self.tokenizer, self.waits)

    def gathered(self):
        return contextlib.nullcontext()


class TinkerSampler:
    """mathrl's sampler interface over a sampling client (``client()`` gives the current one):
    chat prompts are rendered with the run's chat template, as the training prompts are; a
    prompt given more than once is one request for all its samples."""

    def __init__(self, client, tokenizer, waits: _Waits | None = None):
        self.client, self.tokenizer, self.waits = client, tokenizer, waits or _Waits()
        self.stop_ids = stop_token_ids(tokenizer)
        vocab = tokenizer.get_vocab()
        self.think = (vocab.get("<think>"), vocab.get("</think>"))

    def sample(self, prompts, n: int, params: SamplingParams) -> list[list[Completion]]:
        ids = [tuple(p) if p and isinstance(p[0], int) else tuple(encode_prompt(self.tokenizer, p,
                                                                                params.enable_thinking))
               for p in prompts]
        counts = Counter(ids)
        unique = list(counts)
        tinker, client = _sdk(), self.client()
        eos = [] if params.ignore_eos else self.stop_ids
        stop = list(params.stop) or sorted({*params.stop_token_ids, *eos})
        sampling = tinker.SamplingParams(max_tokens=params.max_tokens, temperature=params.temperature,
                                         top_p=params.top_p, top_k=params.top_k or -1, seed=params.seed,
                                         stop=stop or None)

        async def run():
            return await asyncio.gather(*[
                client.sample(tinker.ModelInput.from_ints(list(p)), num_samples=n * counts[p],
                                    sampling_params=sampling) for p in unique])

        start = time.perf_counter()
        try:
            replies = asyncio.run(run())
        except Exception as err:  # noqa: BLE001 - the SDK's errors, as one message
            raise service_error(err, "sampling") from None
        finally:
            self.waits.seconds += time.perf_counter() - start
        pools = {p: [self._completion(s, len(p), params) for s in reply.sequences]
                 for p, reply in zip(unique, replies, strict=True)}
        out = []
        for p in ids:  # the k-th occurrence of a prompt takes the k-th n of its samples
            out.append(pools[p][:n])
            pools[p] = pools[p][n:]
        return out

    def _completion(self, sequence, prompt_n_tokens: int, params: SamplingParams) -> Completion:
        tokens = [int(t) for t in sequence.tokens]
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        finish = "stop" if sequence.stop_reason == "stop" else "length"
        for s in params.stop:  # the text ends before a stop string, as the local sampler's does
            cut = text.find(s)
            if cut >= 0:
                text = text[:cut]
        return Completion(tuple(tokens), tuple(float(x) for x in sequence.logprobs), text, finish,
                          n_thinking_tokens=count_thinking_tokens(tokens, *self.think),
                          prompt_n_tokens=prompt_n_tokens)


class TinkerRollouts:
    """The run's engine when the learner is the Tinker service: each step it samples the weights
    the learner published for it (``save_weights_and_get_sampling_client``)."""

    def __init__(self, learner: TinkerLearner):
        self.learner = learner
        self.local = TinkerSampler(lambda: learner.sampling_client, learner.tokenizer, learner.waits)
        self.version: int | None = None

    def sync(self, version: int, learner) -> None:
        if self.version != version or learner.sampling_client is None:
            learner.save_for_sampler(version)
            self.version = version

    def sample(self, prompts, n: int, params: SamplingParams) -> list[list[Completion]]:
        return self.local.sample(prompts, n, params)

    def pause(self) -> None:
        pass  # the service's memory is its own

    def sampler(self, batch_size: int) -> TinkerSampler:
        return self.local


def remote_sampler(base_url: str | None, model: str, adapter: str | None, tokenizer) -> TinkerSampler:
    """A sampler of the service's ``model`` (with a saved adapter: a ``tinker://`` sampler path or a
    Tinker run's final/), for ``mathrl eval --tinker``."""
    service = service_client(base_url)
    waits = _Waits()
    path = recorded_path(adapter, "sampler", "--adapter") if adapter else None
    client = waits.wait(lambda: service.create_sampling_client(model_path=path,
                                                               base_model=None if path else model),
                        "opening a sampling client")
    return TinkerSampler(lambda: client, tokenizer, waits)

