"""Running a comparison with a wall-clock bound, on the main thread or off it.

On a process's main thread (the CLI, a training loop, each worker of a grading pool) a
``setitimer`` alarm interrupts the comparison. Off the main thread, where signals cannot be
used, the comparison runs in a persistent helper process that is killed and restarted when it
overruns. Either way an overrun returns ``default`` (or ``on_timeout``, for a caller that counts
timeouts apart); nothing can stall the caller past the bound
(work that never returns to Python, such as one enormous integer power, is prevented by the
parser's size limits instead).
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any

STARTUP_TIMEOUT_S = 120.0  # importing sympy in a fresh process; not counted in a call's bound


class _Timeout(Exception):
    pass


class TimedOut:
    """What :func:`call_bounded` returns for an overrun when asked to tell it from a failure."""

    def __repr__(self) -> str:
        return "TIMED_OUT"


TIMED_OUT = TimedOut()


def _on_alarm(signum, frame):
    raise _Timeout


def call_bounded(fn: Callable[..., Any], args: tuple, timeout: float, default: Any,
                 on_timeout: Any = None) -> Any:
    """``fn(*args)``, or ``default`` if it raises or takes longer than ``timeout`` seconds (or,
    given, ``on_timeout`` for an overrun: a grader counts timeouts apart from wrong answers)."""
    late = default if on_timeout is None else on_timeout
    if threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer"):
        return _with_alarm(fn, args, timeout, default, late)
    return _HELPER.call(fn, args, timeout, default, late)


def _with_alarm(fn, args, timeout, default, late):
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        return fn(*args)
    except _Timeout:
        return late
    except Exception:  # any failure inside the grader is "not equal"
        return default
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def serve(fd: int) -> None:
    """The helper's loop (``python -m mathrl.grading.worker FD``): calls in, results out."""
    from multiprocessing.connection import Connection

    import mathrl.grading.equivalence  # noqa: F401  (pay the sympy import before the first call)

    conn = Connection(fd)
    conn.send("ready")
    while True:
        try:
            fn, args = conn.recv()
        except EOFError:  # the parent is gone
            return
        try:
            conn.send((True, fn(*args)))
        except Exception:
            conn.send((False, None))


class _Helper:
    """One helper process per parent process, shared by all threads (calls are serialised). A
    plain child process (``python -m``), not a multiprocessing one, which would re-import the
    caller's main script."""

    def __init__(self):
        self._lock = threading.Lock()
        self._process = None
        self._conn = None

    def _start(self):
        from multiprocessing.connection import Connection

        parent, child = socket.socketpair()
        self._process = subprocess.Popen([sys.executable, "-m", "mathrl.grading.worker", str(child.fileno())],
                                         pass_fds=(child.fileno(),), stdin=subprocess.DEVNULL)
        child.close()
        self._conn = Connection(parent.detach())
        if not self._conn.poll(STARTUP_TIMEOUT_S) or self._conn.recv() != "ready":
            self._stop()
            raise RuntimeError("the grader's helper process did not start")

    def _stop(self):
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._conn.close()
        self._process = self._conn = None

    def call(self, fn, args, timeout, default, late):
        with self._lock:
            if self._process is None or self._process.poll() is not None:
                try:
                    self._start()
                except (RuntimeError, EOFError, OSError):
                    self._stop()
                    return default
            try:
                self._conn.send((fn, args))
                if not self._conn.poll(timeout):
                    self._stop()  # overran: kill it; the next call starts a fresh one
                    return late
                ok, value = self._conn.recv()
            except (EOFError, OSError):  # it died under us: a fresh one next time
                self._stop()
                return default
            return value if ok else default


_HELPER = _Helper()
