"""`mathrl serve` under a mixed load (benchmarks/serve_load.py, shortened): every valid request
answered, every invalid one a 400, no 5xx, cancelled streams and slow senders harmless, memory
flat after warm-up."""

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "serve_load.py"
spec = importlib.util.spec_from_file_location("serve_load", SCRIPT)
serve_load = importlib.util.module_from_spec(spec)
sys.modules["serve_load"] = serve_load  # its dataclasses look their module up
spec.loader.exec_module(serve_load)


@pytest.mark.slow
def test_serve_holds_a_mixed_load_of_sixteen_clients():
    port = serve_load.free_port()
    command = [sys.executable, "-m", "mathrl.cli", "serve", "--model", "tiny", "--port", str(port)]
    process = serve_load.start_server(command, port)
    try:
        result = serve_load.run_load(f"http://127.0.0.1:{port}", process.pid, "tiny", clients=16, seconds=25,
                                     warmup_s=8)
    finally:
        process.terminate()
        process.wait(60)
    assert serve_load.problems(result) == [], result
    kinds = {key.split(" -> ")[0] for key in result["counts"]}
    assert kinds == {"valid", "invalid", "streamed", "cancelled", "slow"}, result["counts"]
    # Valid requests were answered while slow clients dribbled their bodies in.
    assert result["valid_done_while_slow_clients_sent"] > 0
    assert result["rss_mb_end"] <= result["rss_mb_after_warmup"] + 64, result
