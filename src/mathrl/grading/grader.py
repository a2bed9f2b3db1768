"""The one grader call: ``Grader(extract, timeout, processes).grade(problem, completions)``.

Eval, RL rewards, distillation / rejection-sampling filters and ``mathrl grade`` all grade
through it, so they agree by construction. It extracts each completion's final answer per
``extract`` (``mathrl.grading.extract``) and compares it with the gold answer under the grading
policy (``mathrl.grading.equivalence``), each comparison bounded by ``timeout`` seconds.

With ``processes > 0`` the work runs in a pool of worker processes (started once per process and
setting, shared by every Grader, reused): each
worker is the main thread of its process, so the comparison's own bound is a cheap alarm, and
the parent holds a hard deadline on every request besides, killing and replacing a worker that
does not answer in time. Nothing a response contains can stall the caller, from any thread, and
an answer that ran out of time is reported as ``timed_out`` (RL counts those apart from wrong
answers) rather than silently scored wrong. ``processes=0`` grades in the calling thread.
"""

from __future__ import annotations

import atexit
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait

from mathrl.grading.bounded import TIMED_OUT
from mathrl.grading.equivalence import DEFAULT_APPROX_DIGITS, DEFAULT_TIMEOUT_S, compare
from mathrl.grading.extract import extract_answer
from mathrl.types import Completion, Graded, Problem

STARTUP_TIMEOUT_S = 120.0  # a worker imports sympy before it is ready; not part of any request's bound
DEFAULT_PROCESSES = 2


@dataclass(frozen=True)
class GradeRequest:
    """One pair: ``response`` is extracted per ``extract``; ``answer`` is used as given."""

    gold: str
    response: str | None = None
    answer: str | None = None
    extract: str = "boxed"
    tolerance: float | None = None
    approx_digits: int | None = DEFAULT_APPROX_DIGITS


@dataclass(frozen=True)
class GradeResult:
    extracted: str | None
    correct: bool
    timed_out: bool = False


def grade_one(request: GradeRequest, timeout: float = DEFAULT_TIMEOUT_S) -> GradeResult:
    """Grade one request in this process (the comparison bounded by ``timeout``)."""
    extracted = (request.answer if request.response is None
                 else extract_answer(request.response, request.extract))
    verdict = compare(extracted, request.gold, request.tolerance, timeout, request.approx_digits)
    if verdict is TIMED_OUT:
        return GradeResult(extracted, False, True)
    return GradeResult(extracted, bool(verdict))


class Grader:
    """Grades completions of problems (see the module docstring). Under torchrun (``dist``),
    :meth:`grade_groups` gives each rank a share of the groups and gathers the results, so every
    rank holds the same grades (and the same rewards) without grading them all."""

    def __init__(self, extract: str = "boxed", timeout: float = DEFAULT_TIMEOUT_S,
                 processes: int = DEFAULT_PROCESSES, approx_digits: int | None = DEFAULT_APPROX_DIGITS,
                 dist=None):
        self.extract, self.timeout, self.approx_digits = extract, timeout, approx_digits
        self.processes = max(0, processes)
        self.dist = dist

    def grade(self, problem: Problem, completions: Sequence[Completion | str],
              extract: str | None = None) -> list[Graded]:
        """Each completion (or response text) of ``problem``, graded (``extract``: this call's
        extraction mode, default the grader's)."""
        return self.grade_here([problem], [completions], extract)[0]

    def grade_groups(self, problems: Sequence[Problem], completions_P: Sequence[Sequence[Completion | str]],
                     extract: str | None = None) -> list[list[Graded]]:
        """:meth:`grade` for many problems at once (one round through the pool)."""
        if self.dist is None or not self.dist.enabled:
            return self.grade_here(problems, completions_P, extract)
        mine = self.dist.share(len(problems))
        graded = self.grade_here([problems[i] for i in mine], [completions_P[i] for i in mine], extract)
        return [g for part in self.dist.gather(graded) for g in part]

    def grade_requests(self, requests: Sequence[GradeRequest]) -> list[GradeResult]:
        """The low-level call: results in request order."""
        if self.processes == 0 or len(requests) < 2:
            return [grade_one(r, self.timeout) for r in requests]
        key = (self.processes, self.timeout)
        with _POOLS_LOCK:  # one pool per setting in a process, one caller at a time
            if key not in _POOLS:
                _POOLS[key] = _Pool(*key)
            return _POOLS[key].map(requests)

    def grade_here(self, problems, completions_P, extract: str | None = None) -> list[list[Graded]]:
        """:meth:`grade_groups` in this process alone (no collective: any thread may call it)."""
        requests = [GradeRequest(gold=p.answer, response=c if isinstance(c, str) else c.text,
                                 extract=extract or self.extract, tolerance=p.tolerance,
                                 approx_digits=self.approx_digits)
                    for p, group in zip(problems, completions_P, strict=True) for c in group]
        results = iter(self.grade_requests(requests))
        out = []
        for group in completions_P:
            graded = []
            for _ in group:
                r = next(results)
                graded.append(Graded(r.extracted, r.correct, {"correct": float(r.correct)}, float(r.correct),
                                     timed_out=r.timed_out))
            out.append(graded)
        return out


def work(fd: int, timeout: float) -> None:
    """A worker's loop: requests in, results out, over the socket ``fd``."""
    import mathrl.grading.equivalence  # noqa: F401  (pay the sympy import before the first request)

    conn = Connection(fd)
    conn.send("ready")
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return
        if message is None:
            return
        index, request = message
        try:
            result = grade_one(request, timeout)
        except Exception:  # a failure inside the grader is "not equal", as in answers_match
            result = GradeResult(None, False)
        conn.send((index, result))


class _Worker:
    """``python -m mathrl.grading.worker FD TIMEOUT``: a plain child process (not a
    multiprocessing one, which would re-import the caller's main script), talking over a
    socket pair."""

    def __init__(self, timeout: float):
        parent, child = socket.socketpair()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mathrl.grading.worker", str(child.fileno()), repr(timeout)],
            pass_fds=(child.fileno(),), stdin=subprocess.DEVNULL)
        child.close()
        self.conn = Connection(parent.detach())
        self.ready = False
        self.started = time.monotonic()
        self.job: tuple[int, float] | None = None  # (request index, deadline)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()
        self.conn.close()


_POOLS: dict[tuple[int, float], _Pool] = {}
_POOLS_LOCK = threading.Lock()


def close_pools() -> None:
    """Stop every grading worker of this process (also done at exit)."""
    with _POOLS_LOCK:
        for pool in _POOLS.values():
            pool.close()
        _POOLS.clear()


atexit.register(close_pools)


class _Pool:
    """Worker processes, one request in flight per worker, each under a deadline: the worker's
    own alarm bounds the comparison at ``timeout``; a worker silent past ``2 x timeout + 2 s``
    (work that never returns to the interpreter) is killed, its request counted as timed out,
    and a fresh worker takes its place."""

    def __init__(self, processes: int, timeout: float):
        self.timeout = timeout
        self.deadline_s = 2 * timeout + 2.0
        self.workers = [_Worker(timeout) for _ in range(processes)]

    def map(self, requests: Sequence[GradeRequest]) -> list[GradeResult]:
        results: list[GradeResult | None] = [None] * len(requests)
        pending = list(range(len(requests)))[::-1]  # popped from the end: in order
        left = len(requests)
        crashed: dict[int, int] = {}
        while left:
            now = time.monotonic()
            for w in self.workers:
                if w.ready and w.job is None and pending:
                    index = pending.pop()
                    try:
                        w.conn.send((index, requests[index]))
                    except OSError:  # the worker is gone: a fresh one, the request back in line
                        pending.append(index)
                        self._replace(w)
                        continue
                    w.job = (index, now + self.deadline_s)
            waits = [w.job[1] - now for w in self.workers if w.job]
            waits += [w.started + STARTUP_TIMEOUT_S - now for w in self.workers if not w.ready]
            for conn in wait([w.conn for w in self.workers], timeout=max(0.0, min(waits, default=1.0))):
                w = next(w for w in self.workers if w.conn is conn)
                try:
                    message = conn.recv()
                except (EOFError, OSError):  # it died: its request is retried once on a fresh worker
                    if w.job:
                        index = w.job[0]
                        crashed[index] = crashed.get(index, 0) + 1
                        if crashed[index] > 1:
                            results[index] = GradeResult(None, False)  # a failure is "not equal"
                            left -= 1
                        else:
                            pending.append(index)
                    self._replace(w)
                    continue
                if message == "ready":
                    w.ready = True
                    continue
                index, result = message
                results[index] = result
                left -= 1
                w.job = None
            now = time.monotonic()
            for w in list(self.workers):
                if w.job and now > w.job[1]:
                    index = w.job[0]
                    results[index] = GradeResult(None, False, timed_out=True)
                    left -= 1
                    self._replace(w)
                elif not w.ready and now > w.started + STARTUP_TIMEOUT_S:
                    raise RuntimeError("a grading worker did not start within "
                                       f"{STARTUP_TIMEOUT_S:.0f} s (importing sympy)")
        return results  # type: ignore[return-value]

    def _replace(self, worker: _Worker) -> None:
        worker.kill()
        self.workers[self.workers.index(worker)] = _Worker(self.timeout)

    def close(self) -> None:
        for w in self.workers:
            try:
                w.conn.send(None)
            except OSError:
                pass
        for w in self.workers:
            try:
                w.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                w.process.kill()
                w.process.wait()
            w.conn.close()

