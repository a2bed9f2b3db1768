"""Running a training recipe as a user does (a `mathrl` subprocess) and reading its metric lines."""

import json
import signal
import socket
import subprocess
import sys
import time


def run_recipe(command, config, out, *overrides, wait=True, timeout=900):
    """`mathrl COMMAND CONFIG --out OUT key=value...`: the finished process, or the running one."""
    argv = [sys.executable, "-m", "mathrl.cli", command, config, "--out", str(out), *overrides]
    if not wait:
        return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)


def logged_steps(run, key):
    """Steps of the complete metric lines that carry ``key`` (a torn last line is ignored)."""
    path = run / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line)["step"] for line in path.read_text().splitlines(keepends=True)
            if line.endswith("\n") and key in line]


def wait_until(process, condition, poll_s=0.05):
    """Wait for ``condition()`` while ``process`` runs; False if it exited first. No clock: the
    test's outcome never depends on how fast a shared machine is (pytest's own timeout is the cap)."""
    while not condition():
        if process.poll() is not None:
            return condition()
        time.sleep(poll_s)
    return True


def kill_after(process, steps, step):
    """SIGKILL ``process`` (its whole session when it leads one) once ``steps()`` reports ``step``."""
    wait_until(process, lambda: any(s >= step for s in steps()))
    process.send_signal(signal.SIGKILL)
    process.wait()


def free_port() -> int:
    """A port nothing listens on now (for an engine a run starts on a port the test knows)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def port_closes(port, polls=600, poll_s=0.1) -> bool:
    """Whether nothing listens on ``port`` within a bounded wait (an engine dying with its killed
    trainer: the kernel's delivery, not a speed check)."""
    for _ in range(polls):
        if not port_open(port):
            return True
        time.sleep(poll_s)
    return not port_open(port)
