"""Several processes, one run: torchrun's environment, the process group, how the policy is
wrapped, and the few collectives the trainers need.

``torchrun --nproc_per_node N mathrl grpo RECIPE`` (or ``mathrl sft``) starts N copies of the
command; each reads its place from the variables torchrun sets (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``). Plain ``mathrl grpo`` has none of them and runs as one process, with every
helper here a no-op. The process group is set up and torn down in :func:`session`, the one
place: the device per local rank, NCCL between GPUs, gloo between CPU processes.

How the work is split, and why the result equals one process's:

- Every rank holds the same global batch (a function of seed and step), takes its contiguous
  share (:meth:`Dist.share`), and computes per-token loss weights from counts summed over all
  ranks, so the sum of the ranks' gradients is the one-process gradient of the global batch.
- DDP reduces gradients once per optimizer step, on the last micro-batch; FSDP reduce-scatters
  each micro-batch's, so they stay sharded. The collective averages (DDP and FSDP both divide by
  the world size), so each rank's loss is multiplied by the world size to make the average a sum.
- Ranks run the same number of micro-batches (a rank with fewer runs empty ones): FSDP
  all-gathers weights in every forward, DDP reduces in the last backward, and both are
  collectives every rank must join.
- LoRA trains under DDP: each rank holds the whole model; only the adapter has gradients, so
  only it is reduced. Full fine-tuning trains under FSDP2 (``fully_shard`` per decoder layer):
  each rank holds 1/N of the weights, gradients and optimizer state, and gathers a layer's
  weights for its forward and backward.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from mathrl.device import choose_device
from mathrl.processes import die_with_parent
from mathrl.watchdog import attach_dist, phase

# A rank waits at a barrier while rank 0 evaluates or writes a checkpoint: long, not hung.
DEFAULT_TIMEOUT_S = 2 * 3600


@dataclass(frozen=True)
class Dist:
    """This process's place in the run; ``world_size == 1`` is a plain one-process run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")  # where this rank computes (cuda:LOCAL_RANK on GPUs)

    @property
    def main(self) -> bool:
        """Rank 0: it alone writes metrics, checkpoints, published weights and logs."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def share(self, n: int) -> range:
        """This rank's contiguous block of ``n`` items (sizes differ by at most one).

        >>> [list(Dist(r, 3).share(8)) for r in range(3)]
        [[0, 1, 2], [3, 4, 5], [6, 7]]
        """
        base, extra = divmod(n, self.world_size)
        start = self.rank * base + min(self.rank, extra)
        return range(start, start + base + (self.rank < extra))

    def sum(self, values: Sequence[float]) -> list[float]:
        """Element-wise sum over ranks (fp64)."""
        if not self.enabled:
            return [float(v) for v in values]
        t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=self._comm_device)
        with phase("collective"):
            dist.all_reduce(t)
        return t.tolist()

    def max(self, value: int) -> int:
        if not self.enabled:
            return value
        t = torch.tensor([value], dtype=torch.int64, device=self._comm_device)
        with phase("collective"):
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return int(t.item())

    def gather(self, obj) -> list:
        """Every rank's ``obj``, in rank order, on every rank (picklable objects)."""
        if not self.enabled:
            return [obj]
        out: list = [None] * self.world_size
        with phase("collective"):
            dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj):
        """Rank 0's ``obj`` on every rank."""
        if not self.enabled:
            return obj
        box = [obj]
        with phase("collective"):
            dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.enabled:
            with phase("collective"):
                dist.barrier()

    @property
    def _comm_device(self) -> torch.device:
        return self.device if self.device.type == "cuda" else torch.device("cpu")


SINGLE = Dist()  # a one-process run on the CPU: every collective a no-op


def from_env(env=os.environ) -> tuple[int, int, int]:
    """(rank, world size, local rank) as torchrun sets them; (0, 1, 0) outside torchrun."""
    return int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0))


@contextlib.contextmanager
def session(device_preference: str = "auto") -> Iterator[Dist]:
    """This process's :class:`Dist` for the length of the block: under torchrun the process
    group is initialised on entry and destroyed on exit (NCCL with one GPU per local rank, gloo
    on CPUs); otherwise a one-process run on ``device_preference``."""
    rank, world_size, local_rank = from_env()
    device = choose_device(device_preference)
    if world_size == 1:
        yield Dist(device=device)
        return
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    elif device.type != "cpu":
        raise ValueError(f"device {device}: several processes run on CUDA GPUs or on CPUs")
    die_with_parent()  # a SIGKILLed torchrun takes its workers (and their engines) with it
    timeout = timedelta(seconds=float(os.environ.get("MATHRL_DIST_TIMEOUT_S", DEFAULT_TIMEOUT_S)))
    if device.type == "cuda":
        dist.init_process_group("nccl", timeout=timeout, device_id=device)
    else:
        dist.init_process_group("gloo", timeout=timeout)
    try:
        here = Dist(rank, world_size, local_rank, device)
        attach_dist(here)  # the watchdog names the ranks that never reached a collective
        yield here
    finally:
        dist.destroy_process_group()


def wrap_policy(forward: torch.nn.Module, finetune: str, d: Dist) -> torch.nn.Module:
    """``forward`` (a :class:`mathrl.train.policy.LogprobForward`) as this run trains it: as is in
    one process; under DDP for LoRA (the adapter's gradients reduced, the frozen base never
    touched); under FSDP2 for full fine-tuning, each decoder layer a unit of its own and the
    rest (embeddings, tied head, final norm) in the root unit."""
    if not d.enabled:
        return forward
    if finetune == "full":
        from torch.distributed.fsdp import fully_shard

        for layer in forward.model.get_decoder().layers:
            fully_shard(layer)
        fully_shard(forward)
        # FSDP takes the first module to run a forward as its root; run the root now, before a
        # sampler calls the model's layers on their own.
        with torch.no_grad():
            ids_B_T = torch.zeros((1, 2), dtype=torch.long, device=d.device)
            forward(ids_B_T, torch.ones_like(ids_B_T), entropy=False)
        forward.reshard()  # the root keeps its weights gathered after a forward; the optimizer needs shards
        return forward
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(forward, device_ids=[d.device.index] if d.device.type == "cuda" else None,
                                   gradient_as_bucket_view=True)


def is_sharded(module: torch.nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(module, FSDPModule)


@contextlib.contextmanager
def gradient_sync(module: torch.nn.Module, enabled: bool):
    """Backward passes in the block reduce gradients across ranks only if ``enabled``."""
    if is_sharded(module):
        module.set_requires_gradient_sync(enabled)
        yield
    elif isinstance(module, torch.nn.parallel.DistributedDataParallel) and not enabled:
        with module.no_sync():
            yield
    else:
        yield


def accumulation(module: torch.nn.Module, plan: Sequence, d: Dist) -> Iterator:
    """The micro-batches of this rank's ``plan``, then ``None`` for each micro-batch it has fewer
    than the rank with the most (run :func:`idle_pass` for those). DDP reduces on the last
    alone; FSDP reduce-scatters every one, as torchtitan does, because gradients held back
    until the last micro-batch would be whole (unsharded) on every rank in the meantime."""
    n = d.max(len(plan))
    every = is_sharded(module)
    for i in range(n):
        with gradient_sync(module, every or i == n - 1):
            yield plan[i] if i < len(plan) else None


def idle_pass(module: torch.nn.Module, device: torch.device, backward: bool = True) -> None:
    """A forward (and backward) that adds nothing to any gradient: a rank's part in the others'
    collectives when it has no micro-batch left (or no sequence at all) this step."""
    ids_B_T = torch.zeros((1, 2), dtype=torch.long, device=device)
    target_B_T = torch.tensor([[False, True]], device=device)
    logp_B_T, _ = module(ids_B_T, torch.ones_like(ids_B_T), entropy=False, target_B_T=target_B_T)
    if backward:
        (logp_B_T.sum() * 0.0).backward()


@contextlib.contextmanager
def gathered(module: torch.nn.Module):
    """Whole weights on every rank for the block (FSDP: each unit all-gathered once and kept),
    so the model can run forwards that differ between ranks (sampling, evaluation) without
    collectives; sharded again after. A no-op when nothing is sharded."""
    from torch.distributed.fsdp import FSDPModule

    units = [m for m in module.modules() if isinstance(m, FSDPModule)]
    if not units:
        yield
        return
    layers = [u for u in units if u is not module]  # the root never reshards after forward
    for unit in layers:
        unit.set_reshard_after_forward(False, recurse=False)
    for unit in units:
        unit.unshard()
    try:
        yield
    finally:
        for unit in units:
            unit.reshard()
        for unit in layers:
            unit.set_reshard_after_forward(True, recurse=False)
