"""Child processes that must not outlive the run that started them (engines, teachers)."""

from __future__ import annotations

import ctypes
import signal
import subprocess


def die_with_parent() -> bool:
    """Ask the kernel for SIGTERM when this process's parent dies, even by SIGKILL
    (PR_SET_PDEATHSIG; Linux). False where that cannot be had: the parent stops the child on a
    normal exit or Ctrl-C only. Called in a child before exec, or first thing in a server."""
    try:
        return ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM) == 0
    except (OSError, AttributeError):
        return False


def stop(process: subprocess.Popen, grace_s: float) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``grace_s`` seconds."""
    process.terminate()
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
