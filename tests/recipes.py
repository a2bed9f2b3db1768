"""Running a training recipe as a user does (a `mathrl` subprocess) and reading its metric lines."""

import json
import signal
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


def kill_after(process, steps, step, timeout=300):
    """SIGKILL ``process`` once ``steps()`` reports ``step`` (or it exits, or ``timeout`` passes)."""
    deadline = time.time() + timeout
    while not any(s >= step for s in steps()) and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
