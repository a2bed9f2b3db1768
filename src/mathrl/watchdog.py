"""A hang is reported, not waited on: no progress for ``--watchdog-s`` seconds prints where every
thread of every rank is, and exits.

Code marks what it is doing with ``with phase("sampling"): ...`` (sampling, grading, forward,
backward, optimizer, publish, collective, ...); entering or leaving a phase, or :func:`beat`,
counts as progress. A monitor thread started by :func:`watching` (one per process; the CLI starts
it for eval, distill, rejection-sample, sft, grpo and serve) checks every few seconds. When the
time since the last progress passes the limit it writes one line naming the command, the rank and
each thread's phase, then every thread's stack (``faulthandler``), and exits with status 3. Under
torchrun each rank publishes its phase to the job's store as it changes, so the line of a rank
waiting in a collective names the ranks that are not in one: the rank that never arrived.

``idle_ok`` (a server): time spent outside any phase is waiting for work, not a hang.
Off when the limit is 0 (``MATHRL_WATCHDOG_S=0``: the test suite's default, so a slow shared
machine cannot trip it).
"""

from __future__ import annotations

import contextlib
import faulthandler
import os
import sys
import threading
import time
from collections.abc import Iterator

DEFAULT_S = 1800.0  # 30 minutes: a long sampling call on a large model is not a hang
EXIT_STATUS = 3

_active: Watchdog | None = None


class Watchdog:
    def __init__(self, limit_s: float, command: str, dist=None, idle_ok: bool = False, out=None):
        self.limit_s, self.command, self.dist, self.idle_ok = limit_s, command, dist, idle_ok
        self.out = out or sys.stderr
        self.last = time.monotonic()
        self.phases: dict[int, list[tuple[str, float]]] = {}  # thread id -> stack of (phase, since)
        self.published: str | None = None  # the main thread's phase as the job's store has it
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._watch, name="mathrl-watchdog", daemon=True)

    # ---- what the code calls -------------------------------------------------------------------

    def beat(self) -> None:
        self.last = time.monotonic()

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        ident = threading.get_ident()
        with self.lock:
            self.phases.setdefault(ident, []).append((name, time.monotonic()))
        self.beat()
        self._publish()
        try:
            yield
        finally:
            with self.lock:
                stack = self.phases.get(ident, [])
                if stack:
                    stack.pop()
                if not stack:
                    self.phases.pop(ident, None)
            self.beat()
            self._publish()

    # ---- the monitor ---------------------------------------------------------------------------

    def start(self) -> Watchdog:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopped.set()

    def _watch(self) -> None:
        every = max(0.05, min(5.0, self.limit_s / 4))
        while not self.stopped.wait(every):
            with self.lock:
                busy = any(self.phases.values())
            if self.idle_ok and not busy:
                self.beat()
                continue
            if time.monotonic() - self.last > self.limit_s:
                self._fire()

    def _fire(self) -> None:
        print(self.report(), file=self.out, flush=True)
        with contextlib.suppress(Exception):
            faulthandler.dump_traceback(file=self.out, all_threads=True)
        with contextlib.suppress(Exception):
            self.out.flush()
        os._exit(EXIT_STATUS)

    def report(self) -> str:
        """The one line: command, rank, each thread's phase, and under torchrun the other ranks'."""
        now = time.monotonic()
        names = {t.ident: t.name for t in threading.enumerate()}
        with self.lock:
            here = [f"{names.get(ident, ident)}: {stack[-1][0]} for {now - stack[-1][1]:.0f} s"
                    for ident, stack in self.phases.items() if stack]
        rank = ""
        others = ""
        if self.dist is not None and self.dist.enabled:
            rank = f" on rank {self.dist.rank} of {self.dist.world_size}"
            phases = self._ranks()
            if phases:
                listed = ", ".join(f"rank {r}: {p or 'no phase'}" for r, p in sorted(phases.items()))
                missing = [r for r, p in sorted(phases.items()) if "collective" not in (p or "")]
                mine = phases.get(self.dist.rank) or ""
                others = f"; {listed}"
                if "collective" in mine and missing:
                    others += (f"; waiting in a collective for rank{'s' if len(missing) > 1 else ''} "
                               f"{', '.join(map(str, missing))}, which never reached it")
        where = "; ".join(here) if here else "outside any marked phase"
        return (f"mathrl {self.command}: error: no progress for {self.limit_s:g} s{rank} ({where}){others}; "
                f"every thread's stack follows (--watchdog-s sets the limit, 0 turns it off)")

    # ---- ranks ---------------------------------------------------------------------------------

    def _store(self):
        if self.dist is None or not self.dist.enabled:
            return None
        with contextlib.suppress(Exception):
            from torch.distributed import distributed_c10d

            return distributed_c10d._get_default_store()
        return None

    def _publish(self) -> None:
        store = self._store()
        if store is None:
            return
        main = threading.main_thread().ident
        if threading.get_ident() != main:  # only the main thread's phase is shared, by itself alone
            return
        with self.lock:
            stack = self.phases.get(main) or []
            value = stack[-1][0] if stack else ""
        if value == self.published:
            return
        self.published = value
        with contextlib.suppress(Exception):
            store.set(f"mathrl/phase/{self.dist.rank}", value)

    def _ranks(self) -> dict[int, str]:
        store = self._store()
        found: dict[int, str] = {}
        if store is None:
            return found
        for r in range(self.dist.world_size):
            key = f"mathrl/phase/{r}"
            with contextlib.suppress(Exception):
                if store.check([key]):
                    found[r] = store.get(key).decode()
        return found


@contextlib.contextmanager
def phase(name: str) -> Iterator[None]:
    """Mark what this thread does (a no-op when no watchdog runs)."""
    if _active is None:
        yield
        return
    with _active.phase(name):
        yield


def beat() -> None:
    if _active is not None:
        _active.beat()


def limit_from(value: float | None) -> float:
    """``--watchdog-s``, else ``$MATHRL_WATCHDOG_S``, else :data:`DEFAULT_S`."""
    if value is not None:
        return float(value)
    return float(os.environ.get("MATHRL_WATCHDOG_S", DEFAULT_S))


@contextlib.contextmanager
def watching(limit_s: float, command: str, idle_ok: bool = False) -> Iterator[Watchdog | None]:
    """A watchdog for the block (none when ``limit_s`` is 0)."""
    global _active
    if limit_s <= 0:
        yield None
        return
    dog = Watchdog(limit_s, command, idle_ok=idle_ok).start()
    previous, _active = _active, dog
    try:
        yield dog
    finally:
        dog.stop()
        _active = previous


def attach_dist(dist) -> None:
    """Let the running watchdog see the other ranks (called once the process group is up)."""
    if _active is not None:
        _active.dist = dist
        _active._publish()
