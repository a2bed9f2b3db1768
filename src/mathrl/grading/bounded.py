"""Running a comparison with a wall-clock bound, on the main thread or off it.

On a process's main thread (the CLI, a training loop, each worker of a grading pool) a
``setitimer`` alarm interrupts the comparison. Off the main thread, where signals cannot be
used, the comparison runs in a persistent helper process that is killed and restarted when it
overruns. Either way an overrun returns ``default``; nothing can stall the caller past the bound
(work that never returns to Python, such as one enormous integer power, is prevented by the
parser's size limits instead).
"""

from __future__ import annotations

import multiprocessing as mp
import signal
import threading
from collections.abc import Callable
from typing import Any

STARTUP_TIMEOUT_S = 120.0  # importing sympy in a fresh process; not counted in a call's bound


class _Timeout(Exception):
    pass


def _on_alarm(signum, frame):
    raise _Timeout


def call_bounded(fn: Callable[..., Any], args: tuple, timeout: float, default: Any) -> Any:
    """``fn(*args)``, or ``default`` if it raises or takes longer than ``timeout`` seconds."""
    if threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer"):
        return _with_alarm(fn, args, timeout, default)
    return _HELPER.call(fn, args, timeout, default)


def _with_alarm(fn, args, timeout, default):
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        return fn(*args)
    except Exception:  # _Timeout included: any failure inside the grader is "not equal"
        return default
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _serve(conn) -> None:
    import mathrl.grading.equivalence  # noqa: F401  (pay the sympy import before the first call)

    conn.send("ready")
    while True:
        fn, args = conn.recv()
        try:
            conn.send((True, fn(*args)))
        except Exception:
            conn.send((False, None))


class _Helper:
    """One helper process per parent process, shared by all threads (calls are serialised)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._process = None
        self._conn = None

    def _start(self):
        parent, child = mp.get_context("spawn").Pipe()
        self._process = mp.get_context("spawn").Process(target=_serve, args=(child,), daemon=True)
        self._process.start()
        self._conn = parent
        if not parent.poll(STARTUP_TIMEOUT_S) or parent.recv() != "ready":
            self._stop()
            raise RuntimeError("the grader's helper process did not start")

    def _stop(self):
        if self._process is not None:
            self._process.kill()
            self._process.join()
        self._process = self._conn = None

    def call(self, fn, args, timeout, default):
        with self._lock:
            if self._process is None or not self._process.is_alive():
                try:
                    self._start()
                except RuntimeError:
                    return default
            self._conn.send((fn, args))
            if not self._conn.poll(timeout):
                self._stop()  # overran: kill it; the next call starts a fresh one
                return default
            ok, value = self._conn.recv()
            return value if ok else default


_HELPER = _Helper()
