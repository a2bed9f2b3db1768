"""The local learner: the policy in this process (or, under torchrun, in every rank's), as
:class:`~mathrl.train.learner.Learner`'s primitives.

What it does with a batch of datums, whatever the loss:

- Under torchrun each rank takes a contiguous share of the datums; every datum's weights are
  already global (the loop computes them over the whole batch), so the summed gradients of the
  ranks are the one-process gradient (:mod:`mathrl.distributed`: DDP for LoRA, FSDP2 for full
  fine-tuning; the loops never see a collective).
- The share is cut into micro-batches of at most ``micro_batch_size`` rows and
  ``micro_batch_tokens`` padded tokens (one datum per row, or several packed with
  ``pack_to``), so any plan gives the same gradient.
- Log-probabilities come from the chunked LM head (:func:`~mathrl.train.policy.token_logprobs_and_entropy`):
  only the positions with a non-zero weight are computed.
- ``save_state`` writes a checkpoint that resumes on any number of processes
  (:mod:`mathrl.train.checkpoint`); ``save_for_sampler`` publishes the adapter (or the whole
  weights) for an engine in another process.
"""

from __future__ import annotations

import contextlib
import copy
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from mathrl.distributed import SINGLE, Dist, accumulation, gathered, idle_pass, is_sharded, wrap_policy
from mathrl.fileio import writing
from mathrl.train.batching import pack_rows, plan_micro_batches
from mathrl.train.checkpoint import (
    load_optimizer_state,
    load_state,
    load_weights_into,
    optimizer_state,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from mathrl.train.learner import AdamParams, Datum, ForwardBackward, PolicyRef
from mathrl.train.losses import Loss, LossInputs, k3_kl
from mathrl.train.policy import (
    DEFAULT_CHUNK_TOKENS,
    LogprobForward,
    LoraSettings,
    load_policy,
    set_activation_checkpointing,
    token_logprobs,
    trainable_parameters,
)
from mathrl.watchdog import phase

PUBLISHED_DIR = "published"
KEEP_PUBLISHED = 2  # the version being served and the one before it
RESERVED_STATE = ("rng", "rng_ranks", "optimizer")  # trainer_state.pt keys of the learner's own


@dataclass(frozen=True)
class Plan:
    """How a batch is cut into forward/backward passes (see the module docstring)."""

    micro_batch_size: int = 16
    micro_batch_tokens: int | None = None
    pack_to: int | None = None  # pack several datums per row of this many tokens
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS
    temperature: float = 1.0  # the logits are divided by it, as the sampler's were
    # Log-probabilities of every position, not only the weighted ones (a Tinker client may read
    # them all); the loss is the same.
    all_positions: bool = False


def collate(rows: Sequence[Sequence[Datum]], pad_id: int, device: torch.device) -> dict:
    """Right-padded (B, T) tensors of rows of datums, in the input's alignment: a datum's
    sequence sits at ``[at, at + n + 1)`` and its per-position fields at ``[at + 1, at + n + 1)``,
    where the token they score is. One datum per row gets an attention mask; packed rows get
    position ids that restart at every datum (and no mask), so each attends only to itself."""
    width = max(sum(len(d.model_input) + 1 for d in row) for row in rows)
    shape = (len(rows), width)
    ids = torch.full(shape, pad_id, dtype=torch.long)
    targets = torch.full(shape, pad_id, dtype=torch.long)
    attention = torch.zeros(shape, dtype=torch.long)
    positions = torch.zeros(shape, dtype=torch.long)
    segments = torch.full(shape, -1, dtype=torch.long)
    weights = torch.zeros(shape)
    sampler = torch.zeros(shape) if all(d.logprobs is not None for row in rows for d in row) else None
    advantages = torch.zeros(shape) if all(d.advantages is not None for row in rows for d in row) else None
    segment = 0
    for b, row in enumerate(rows):
        at = 0
        for d in row:
            n = len(d.model_input)
            ids[b, at:at + n + 1] = torch.tensor(d.sequence)
            targets[b, at + 1:at + n + 1] = torch.tensor(d.target_tokens)
            weights[b, at + 1:at + n + 1] = torch.tensor(d.weights) if d.weights is not None else 1.0
            if sampler is not None:
                sampler[b, at + 1:at + n + 1] = torch.tensor(d.logprobs)
            if advantages is not None:
                advantages[b, at + 1:at + n + 1] = torch.tensor(d.advantages)
            positions[b, at:at + n + 1] = torch.arange(n + 1)
            segments[b, at + 1:at + n + 1] = segment
            segment += 1
            at += n + 1
        attention[b, :at] = 1
        positions[b, at:] = torch.arange(width - at)  # the padding is a segment of its own
    packed = any(len(row) > 1 for row in rows)
    mask = weights != 0
    return {
        "datum_B_T": (segments >= 0).to(device),
        "input_ids_B_T": ids.to(device),
        "target_ids_B_T": targets.to(device),
        "attention_B_T": None if packed else attention.to(device),
        "position_ids_B_T": positions.to(device) if packed else None,
        "mask_B_T": mask.to(device),
        "weights_B_T": weights.to(device),
        "sampler_logp_B_T": None if sampler is None else sampler.to(device),
        "advantages_B_T": None if advantages is None else advantages.to(device),
        "segments_B_T": segments.to(device) if packed else None,
    }


def micro_batches(datums: Sequence[Datum], plan: Plan) -> list[list[list[int]]]:
    """Datum indices of each micro-batch's rows, in a fixed order: one datum per row sorted by
    length (less padding), or, with ``pack_to``, datums packed first-fit into rows first."""
    lengths = [len(d.model_input) + 1 for d in datums]
    rows = [[i] for i in range(len(datums))] if plan.pack_to is None else pack_rows(lengths, plan.pack_to)
    row_lengths = [sum(lengths[i] for i in row) for row in rows]
    return [[rows[r] for r in micro] for micro in plan_micro_batches(row_lengths, plan.micro_batch_size,
                                                                     plan.micro_batch_tokens)]


def check_datums(datums: Sequence[Datum], loss: Loss) -> None:
    """Every field ``loss`` reads is there, on every datum (one message naming the first gap)."""
    for i, d in enumerate(datums):
        for name in loss.needs:
            if getattr(d, name) is None:
                raise ValueError(f"datum {i}: loss {loss.name} needs {name}, which it does not carry")


def accumulate(forward: torch.nn.Module, datums: Sequence[Datum], loss: Loss, plan: Plan, pad_id: int,
               device: torch.device, dist: Dist = SINGLE, reference=None, backward: bool = True,
               return_logprobs: bool = False) -> ForwardBackward:
    """Forward (and backward) over ``datums`` in micro-batches, leaving the gradient of
    ``sum(weight x loss)`` in ``.grad``. ``forward`` is a :class:`~mathrl.train.policy.LogprobForward`
    as ``dist`` wraps it; ``datums`` are the global batch (this rank computes its share).
    ``reference``: a context-manager factory yielding the frozen module the KL term compares with.
    Returns the global metrics and, if asked, every datum's log-probabilities."""
    check_datums(datums, loss)
    mine = list(dist.share(len(datums)))
    local = [datums[i] for i in mine]
    n_tokens = sum(d.n_loss_tokens for d in datums)
    sums: dict[str, float] = {"loss": 0.0}
    logprobs: dict[int, tuple[float, ...]] = {}
    elementwise: dict[int, tuple[float, ...]] = {}
    layout = micro_batches(local, plan)
    context = contextlib.nullcontext if backward else torch.no_grad
    for rows in accumulation(forward, layout, dist):
        with context():
            if rows is None:  # this rank has no micro-batch left: join the others' collectives
                idle_pass(forward, device, backward)
                continue
            batch = collate([[local[i] for i in row] for row in rows], pad_id, device)
            mask_B_T = batch["mask_B_T"]
            computed_B_T = batch["datum_B_T"] if plan.all_positions else mask_B_T
            with phase("forward"):
                logp_B_T, entropy_B_T = forward(
                    batch["input_ids_B_T"], batch["attention_B_T"], plan.temperature, entropy=loss.entropy,
                    target_B_T=computed_B_T, position_ids_B_T=batch["position_ids_B_T"],
                    chunk_tokens=plan.chunk_tokens, target_ids_B_T=batch["target_ids_B_T"])
            ref_logp_B_T = None
            if loss.needs_reference:
                with torch.no_grad(), reference() as ref_model:
                    ref_logp_B_T = token_logprobs(
                        ref_model, batch["input_ids_B_T"], batch["attention_B_T"], plan.temperature,
                        target_B_T=mask_B_T, position_ids_B_T=batch["position_ids_B_T"],
                        chunk_tokens=plan.chunk_tokens, target_ids_B_T=batch["target_ids_B_T"])
            inputs = LossInputs(mask_B_T, batch["sampler_logp_B_T"], batch["advantages_B_T"], ref_logp_B_T,
                                batch["segments_B_T"])
            loss_B_T, diagnostics = loss(logp_B_T, inputs)
            weighted_B_T = loss_B_T * mask_B_T * batch["weights_B_T"]
            total = weighted_B_T.sum()
            if backward:
                with phase("backward"):  # the gradient reduction averages; the world size makes it a sum
                    (total * dist.world_size).backward()
            with torch.no_grad():
                sums["loss"] += total.item()
                _diagnostics(sums, logp_B_T.detach(), entropy_B_T, diagnostics, batch)
                if return_logprobs:
                    _collect(logprobs, rows, mine, local, logp_B_T.detach())
                    _collect(elementwise, rows, mine, local, weighted_B_T.detach())
    names = sorted(sums)
    *totals, n_micro = dist.sum([sums[k] for k in names] + [len(layout)])
    sums = dict(zip(names, totals, strict=True))
    metrics = {"train/loss": sums.pop("loss"), "train/sequences": len(datums), "train/tokens": n_tokens,
               "train/micro_batches": int(n_micro)}
    metrics.update({f"train/{k}": v / max(1, n_tokens) for k, v in sums.items()})
    if not return_logprobs:
        return ForwardBackward(metrics)
    merged = [{i: v for part in dist.gather(found) for i, v in part.items()}
              for found in (logprobs, elementwise)]
    return ForwardBackward(metrics, *([m[i] for i in range(len(datums))] for m in merged))


def _diagnostics(sums: dict, logp_B_T, entropy_B_T, diagnostics: dict, batch: dict) -> None:
    """Add this micro-batch's token sums (over the loss tokens) to ``sums``."""
    mask_B_T = batch["mask_B_T"]

    def add(name, values_B_T):
        sums[name] = sums.get(name, 0.0) + (values_B_T * mask_B_T).sum().item()

    if entropy_B_T is not None:
        add("entropy", entropy_B_T)
    sampler_B_T = batch["sampler_logp_B_T"]
    if sampler_B_T is not None:
        add("kl_sampler_trainer", sampler_B_T - logp_B_T)  # k1 estimate of KL(sampler || trainer)
        # k3 (unbiased, never negative) of the same KL: the mismatch to watch with an engine.
        add("kl_sampler_trainer_k3", k3_kl(sampler_B_T, logp_B_T))
    for name, values_B_T in diagnostics.items():
        add(name, values_B_T)


def _collect(logprobs: dict, rows, mine: list[int], local: Sequence[Datum], logp_B_T: torch.Tensor) -> None:
    """Each datum's log-probabilities in its own alignment (0 where its weight is 0)."""
    for b, row in enumerate(rows):
        at = 0
        for i in row:
            n = len(local[i].model_input)
            logprobs[mine[i]] = tuple(logp_B_T[b, at + 1:at + n + 1].tolist())
            at += n + 1


def reference_policy(model, new_adapter: bool):
    """The frozen initial policy for the KL term: a context manager factory yielding the module
    that computes it.

    A new LoRA adapter starts at zero, so the initial policy is the same module with the adapter
    switched off: no copy. Otherwise (full fine-tuning, or a run that starts from a saved adapter)
    a frozen copy of the initial weights is made once (it doubles the weights' memory); it is
    made before any checkpoint is loaded, so a resumed run keeps the run's initial policy.
    """
    if new_adapter:
        @contextlib.contextmanager
        def adapter_off():
            with model.disable_adapter():
                yield model

        return adapter_off
    frozen = copy.deepcopy(model).eval().requires_grad_(False)
    return lambda: contextlib.nullcontext(frozen)


class LocalLearner:
    """The policy of ``model`` (+ ``adapter``) trained in this process; see the module docstring.

    ``reference``: keep the initial policy for a KL term (made now, before any state is loaded).
    ``out_dir``: where published weights go (``published/step_N``)."""

    def __init__(self, model: str, tokenizer, out_dir: Path, finetune: str = "lora",
                 lora: LoraSettings | None = None, adapter: str | None = None, plan: Plan | None = None,
                 gradient_checkpointing: bool = False, dtype: torch.dtype = torch.float32,
                 adam: AdamParams | None = None, reference: bool = False, dist: Dist = SINGLE):
        self.dist, self.device, self.out_dir = dist, dist.device, Path(out_dir)
        self.tokenizer, self.plan = tokenizer, plan or Plan()
        self.model = load_policy(model, finetune, lora or LoraSettings(), self.device, dtype, adapter)
        set_activation_checkpointing(self.model, gradient_checkpointing)
        new_adapter = finetune == "lora" and adapter is None
        self.reference = reference_policy(self.model, new_adapter) if reference else None
        # The one forward: log-probabilities of the policy, as DDP or FSDP wraps it.
        self.forward_module = wrap_policy(LogprobForward(self.model), finetune, dist)
        self.trainable = trainable_parameters(self.model)  # after wrapping: FSDP swaps in sharded ones
        adam = adam or AdamParams(learning_rate=1e-4)
        self.optimizer = torch.optim.AdamW(self.trainable, lr=adam.learning_rate,
                                           betas=(adam.beta1, adam.beta2), eps=adam.eps,
                                           weight_decay=adam.weight_decay)

    def describe(self) -> str:
        n_train = sum(p.numel() for p in self.trainable)  # a shard's numel() is the whole tensor's
        n_all = sum(p.numel() for p in self.model.parameters())
        wrapper = "FSDP" if is_sharded(self.forward_module) else "DDP"
        processes = f", {self.dist.world_size} processes ({wrapper})" if self.dist.enabled else ""
        kind = "lora" if hasattr(self.model, "peft_config") else "full"
        return (f"{kind}, {n_train:,} of {n_all:,} parameters train "
                f"({self.device}, {self.model.dtype}{processes})")

    def forward(self, datums: Sequence[Datum], loss: Loss, return_logprobs: bool = True) -> ForwardBackward:
        return self._run(datums, loss, backward=False, return_logprobs=return_logprobs)

    def forward_backward(self, datums: Sequence[Datum], loss: Loss,
                         return_logprobs: bool = False) -> ForwardBackward:
        return self._run(datums, loss, backward=True, return_logprobs=return_logprobs)

    def _run(self, datums, loss, backward, return_logprobs) -> ForwardBackward:
        if loss.needs_reference and self.reference is None:
            raise ValueError("a KL term needs the initial policy: build the learner with reference=True")
        return accumulate(self.forward_module, datums, loss, self.plan, self.tokenizer.pad_token_id,
                          self.device, self.dist, self.reference, backward=backward,
                          return_logprobs=return_logprobs)

    def optim_step(self, adam: AdamParams) -> dict[str, float]:
        for group in self.optimizer.param_groups:
            group.update(lr=adam.learning_rate, betas=(adam.beta1, adam.beta2), eps=adam.eps,
                         weight_decay=adam.weight_decay)
        clip = adam.grad_clip_norm if adam.grad_clip_norm > 0 else float("inf")
        with phase("optimizer"):
            grad_norm = torch.nn.utils.clip_grad_norm_(self.trainable, clip)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        # Under FSDP the norm is a DTensor over the shards' partial norms.
        norm = float(grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm)
        return {"train/grad_norm": norm}

    def full_weights(self) -> dict | None:
        """The model's whole state dict on rank 0 when FSDP shards it (a collective: every rank
        calls it); None when each process holds the whole module."""
        if not is_sharded(self.forward_module):
            return None
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        weights = get_model_state_dict(self.model,
                                       options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        # A tied weight (Qwen3-4B's head is its embeddings) is saved once, as one process saves it.
        seen, tied = set(), set()
        for name, param in self.model.named_parameters(remove_duplicate=False):
            if id(param) in seen:
                tied.add(name)
            seen.add(id(param))
        return {k: v for k, v in weights.items() if k not in tied}

    def save_for_sampler(self, version: int) -> PolicyRef:
        """:func:`publish` this policy (every rank calls it: FSDP gathers its shards)."""
        with phase("publish"):
            return publish(self.model, self.out_dir, version, self.full_weights(), self.dist)

    def save_state(self, folder: Path, extra: dict) -> None:
        """A checkpoint: every rank calls it (FSDP gathers, each rank gives its RNG state), rank 0
        writes it, and no rank goes on before it is in place."""
        weights = self.full_weights()
        state = {"optimizer": optimizer_state(self.model, self.optimizer),
                 "rng_ranks": self.dist.gather(rng_state()), **extra}
        if self.dist.main:
            save_checkpoint(folder, self.model, self.tokenizer, state, weights=weights)
        self.dist.barrier()

    def load_state(self, folder: Path, optimizer: bool = True) -> dict:
        """Weights, optimizer (unless ``optimizer`` is False: then a fresh one) and RNG from
        ``folder`` (each rank its own RNG state when the run had as many ranks); returns the rest
        of the state."""
        state = load_state(folder)
        load_weights_into(self.model, folder)
        if optimizer:
            load_optimizer_state(self.model, self.optimizer, state["optimizer"])
        else:
            self.optimizer.state.clear()
        per_rank = state.get("rng_ranks") or [state["rng"]]
        set_rng_state(per_rank[self.dist.rank] if len(per_rank) == self.dist.world_size else state["rng"])
        return {k: v for k, v in state.items() if k not in RESERVED_STATE}

    def sampler(self, batch_size: int):
        """The in-process sampler of the trained module (eval mode while it samples; the
        training RNG streams untouched, which an exact resume depends on)."""
        return ModuleSampler(self.model, self.tokenizer, batch_size)

    def rollouts(self, batch_size: int, dist):
        """Rollouts sampled from the trained module itself (under torchrun, each rank its share)."""
        from mathrl.train.rollouts import InProcessRollouts

        return InProcessRollouts(self, batch_size, dist)

    def gathered(self):
        """Whole weights on this rank for the block (sampling, evaluation under FSDP)."""
        return gathered(self.forward_module) if self.dist.enabled else contextlib.nullcontext()


def publish(model, out_dir: Path, version: int, weights: dict | None = None,
            dist: Dist = SINGLE) -> PolicyRef:
    """The LoRA adapter (or, full fine-tuning, the whole model: a model's size on disk each time,
    the last two kept) in ``out_dir/published/step_N``, written to a temporary folder renamed into
    place so a server never reads half a file. ``weights``: the whole state dict when FSDP shards
    the module. Rank 0 writes, and no rank returns before the folder is in place."""
    kind = "adapter" if hasattr(model, "peft_config") else "weights"
    root = Path(out_dir) / PUBLISHED_DIR
    final = root / f"step_{version:06d}"
    if dist.main and not final.is_dir():
        publish_to(model, final, weights)
    if dist.main:
        # The last two up to this version; later ones are a killed run's, never checkpointed
        # (kept, they would sort after this one and have it pruned at once).
        for old in root.glob("step_*"):
            number = old.name[len("step_"):]
            if old.is_dir() and number.isdigit() and not version - KEEP_PUBLISHED < int(number) <= version:
                shutil.rmtree(old, ignore_errors=True)
    dist.barrier()
    return PolicyRef(version, final, kind)


def publish_to(model, folder: Path, weights: dict | None = None) -> Path:
    """``model.save_pretrained`` into ``folder`` by way of a temporary folder renamed into place."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with writing(folder):
            model.save_pretrained(tmp, state_dict=weights)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder


class ModuleSampler:
    """:class:`~mathrl.sampling.hf.HFSampler` over a module that is also being trained."""

    def __init__(self, model, tokenizer, batch_size: int):
        from mathrl.sampling.hf import HFSampler

        self.inner = HFSampler(model, tokenizer, batch_size=batch_size)
        self.tokenizer = tokenizer

    def sample(self, prompts, n, params):
        model = self.inner.model
        was_training = model.training
        model.eval()
        rng = torch.get_rng_state()
        try:
            return self.inner.sample(list(prompts), n, params)
        finally:
            torch.set_rng_state(rng)
            model.train(was_training)
