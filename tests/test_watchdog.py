"""A hang is reported, not waited on: the watchdog names the command, the rank and the phase,
dumps every thread's stack and exits 3; under torchrun it names the rank that never reached the
collective the others wait in."""

import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mathrl.watchdog import EXIT_STATUS, phase, watching

GRPO = ["configs/tiny/grpo.yaml", "max_steps=3", "groups_per_batch=4", "group_size=4", "max_tokens=32",
        "save_every=0", "eval.benchmarks=[]"]


def test_phases_nest_per_thread_and_count_as_progress():
    with watching(60, "grpo") as dog:
        with phase("sampling"), phase("collective"):
            assert "MainThread: collective for 0 s" in dog.report()
        seen = []

        def producer():
            with phase("grading"):
                seen.append(dog.report())

        thread = threading.Thread(target=producer, name="mathrl-rollouts-ahead")
        thread.start()
        thread.join()
        assert "mathrl-rollouts-ahead: grading" in seen[0]
        assert "outside any marked phase" in dog.report()
    with phase("sampling"):  # no watchdog: a no-op
        pass


def test_off_when_the_limit_is_zero():
    with watching(0, "eval") as dog:
        assert dog is None


@pytest.fixture()
def hanging_engine():
    """An engine that loads adapters (its control routes answer) but never answers a completion."""
    release = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.path.endswith("/completions"):
                release.wait(600)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b"{}")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    release.set()
    server.shutdown()
    server.server_close()


@pytest.mark.slow
def test_a_hung_engine_is_reported_with_its_phase_and_every_stack(hanging_engine, tmp_path):
    argv = [sys.executable, "-m", "mathrl.cli", "grpo", *GRPO[:1], "--out", str(tmp_path / "run"), *GRPO[1:],
            "rollout.engine=server", f"rollout.server.urls=[{hanging_engine}]", "--watchdog-s", "20"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert out.returncode == EXIT_STATUS, out.stderr[-3000:]
    first = out.stderr.strip().splitlines()[0]
    assert first.startswith("mathrl grpo: error: no progress for 20 s (MainThread: sampling for "), first
    assert "every thread's stack follows" in first
    assert 'Thread 0x' in out.stderr and "in _post" in out.stderr  # the stacks: waiting on the engine


HANG_RANK_1 = '''
import os, time
from mathrl.grading.grader import Grader

if os.environ.get("RANK") == "1":  # rank 1 never finishes grading: it never reaches the gather
    Grader.grade_here = lambda self, *args, **kwargs: time.sleep(3600)
'''


@pytest.mark.slow
def test_a_rank_that_never_reaches_a_collective_is_named(tmp_path):
    plugin = tmp_path / "hang_rank_1.py"
    plugin.write_text(HANG_RANK_1)
    env = {**os.environ, "MATHRL_PLUGINS": str(plugin), "MATHRL_WATCHDOG_S": "20"}
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
            "-m", "mathrl.cli", "grpo", *GRPO[:1], "--out", str(tmp_path / "run"), *GRPO[1:]]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode != 0
    lines = [line for line in out.stderr.splitlines() if "mathrl grpo: error: no progress for 20 s" in line]
    waiting = [line for line in lines if "on rank 0 of 2" in line]
    assert waiting, out.stderr[-4000:]
    assert "MainThread: collective for" in waiting[0]
    assert "waiting in a collective for rank 1, which never reached it" in waiting[0]
    assert "rank 0: collective, rank 1: grading" in waiting[0]
