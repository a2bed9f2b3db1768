"""Rollouts sampled ahead: the engine samples step k+1 (up to k+N) while the learner trains step k.

``rollout.max_staleness: N`` (N >= 1) runs a producer thread beside the training loop. For each
step s, in order, it waits until the learner has published the weights of at least step s - N,
loads the newest published weights into the engine (between batches: never in the middle of a
prompt's group), samples and grades the step's batch, and hands it over with the policy version
that sampled it. The training loop takes batch s, trains, and publishes version s + 1. So the
engine is never idle while the learner has a step to train, and a batch trained at step s was
sampled by version s - N at the oldest; a batch older than that (the guard :func:`fresh` keeps)
is dropped and counted, never trained on.

What stays in the training loop, in step order: the collectives under torchrun (each rank's
producer samples and grades its own share of the batch on its own engine; the loop gathers the
shares), the rewards' records (the efficiency reward's best-so-far must be a function of the
steps checkpointed before it) and everything the checkpoint holds. Nothing sampled ahead is
saved: a run killed and resumed samples its first step again with the checkpoint's weights.

A failure on either side stops the other with one message: an engine error surfaces from
:meth:`RolloutsAhead.take` in the training loop; a training error closes the producer, which
drops what it sampled and exits (an engine mathrl started is stopped after it, which ends any
request it was waiting on).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from mathrl.errors import UserError
from mathrl.train.learner import PolicyRef

T = TypeVar("T")


class AheadError(UserError):
    """The rollout producer failed: the training loop stops with its message."""


@dataclass(frozen=True)
class Ahead(Generic[T]):
    """One step's rollouts as the producer made them: what ``produce(step)`` returned, the policy
    version the engine sampled them with, and the seconds the engine spent."""

    step: int
    version: int
    payload: T
    produce_s: float


def fresh(step: int, version: int, max_staleness: int) -> bool:
    """Whether rollouts sampled by ``version`` may train step ``step`` (``step - version``
    optimizer steps behind the weights they update).

    >>> fresh(5, 4, 1), fresh(5, 3, 1), fresh(5, 5, 0)
    (True, False, True)
    """
    return 0 <= step - version <= max_staleness


class RolloutsAhead(Generic[T]):
    """The producer thread and its hand-over (see the module's docstring).

    ``engine``: an engine in its own process (its ``load(ref)`` and ``version``); ``produce(step)``
    samples and grades that step's batch on it (no collective: it runs beside the training
    loop's); ``steps``: the steps still to train, in order."""

    def __init__(self, engine, produce: Callable[[int], T], steps: range, max_staleness: int,
                 name: str = "mathrl-rollouts-ahead"):
        if max_staleness < 1:
            raise ValueError("RolloutsAhead needs max_staleness >= 1 (0 is the synchronous loop)")
        self.engine, self.produce, self.steps, self.max_staleness = engine, produce, steps, max_staleness
        self.changed = threading.Condition()
        # Held while the engine loads and while the learner publishes (which deletes old folders):
        # the engine never loads a folder being removed.
        self.publishing = threading.Lock()
        self.published: PolicyRef | None = None
        self.ready: dict[int, Ahead[T]] = {}
        self.error: BaseException | None = None
        self.stopping = self.held = self.busy = False
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    # ---- the training loop's side --------------------------------------------------------------

    def publish(self, save: Callable[[int], PolicyRef], version: int) -> PolicyRef:
        """Publish the weights of ``version`` (``save``: the learner's ``save_for_sampler``) and
        let the producer use them from its next batch on."""
        with self.publishing:
            ref = save(version)
        with self.changed:
            self.published = ref
            self.changed.notify_all()
        return ref

    def take(self, step: int) -> Ahead[T]:
        """The rollouts of ``step``, waiting for them; the producer's failure raised here."""
        with self.changed:
            self.held = False  # an evaluation's hold ends when training goes on
            self.changed.notify_all()
            self.changed.wait_for(lambda: step in self.ready or self.error is not None
                                  or not self.thread.is_alive())
            if step in self.ready:
                return self.ready.pop(step)
            if self.error is not None:
                if isinstance(self.error, UserError):
                    raise AheadError(f"rollouts sampled ahead failed at step {step}: {self.error}") from None
                raise AheadError(f"rollouts sampled ahead failed at step {step}: "
                                 f"{type(self.error).__name__}: {self.error}") from self.error
            raise AheadError(f"the rollout producer ended before step {step}")

    def hold(self) -> None:
        """Stop the producer between batches (until the next :meth:`take`): the training loop
        uses the engine itself (an evaluation of the newest weights)."""
        with self.changed:
            self.held = True
            self.changed.wait_for(lambda: not self.busy or not self.thread.is_alive())

    def load(self, ref: PolicyRef) -> None:
        """Load ``ref`` into the held engine (a no-op when it is loaded)."""
        with self.publishing:
            if self.engine.version != ref.version:
                self.engine.load(ref)

    def close(self, timeout_s: float = 30.0) -> None:
        """Stop the producer and drop what it sampled; wait up to ``timeout_s`` for a request it
        is in (an engine mathrl started is stopped after this, which ends it)."""
        with self.changed:
            self.stopping = True
            self.ready.clear()
            self.changed.notify_all()
        self.thread.join(timeout_s)

    def __enter__(self) -> RolloutsAhead[T]:
        return self

    def __exit__(self, *exc) -> None:
        self.close(timeout_s=30.0 if exc[0] is None else 2.0)

    # ---- the producer thread ---------------------------------------------------------------------

    def _run(self) -> None:
        try:
            for step in self.steps:
                with self.changed:
                    self.changed.wait_for(lambda s=step: self.stopping or (
                        not self.held and self.published is not None
                        and self.published.version >= s - self.max_staleness))
                    if self.stopping:
                        return
                    self.busy = True
                try:
                    with self.publishing:  # the newest weights, loaded between batches
                        ref = self.published
                        if self.engine.version != ref.version:
                            self.engine.load(ref)
                    version = self.engine.version
                    t0 = time.perf_counter()
                    payload = self.produce(step)
                    made = Ahead(step, version, payload, time.perf_counter() - t0)
                finally:
                    with self.changed:
                        self.busy = False
                        self.changed.notify_all()
                with self.changed:
                    if self.stopping:
                        return
                    self.ready[step] = made
                    self.changed.notify_all()
        except BaseException as err:  # noqa: BLE001 - handed to the training loop, which raises it
            with self.changed:
                if not self.stopping:
                    self.error = err
                self.changed.notify_all()
