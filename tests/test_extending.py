"""docs/extending.md's code, run as a user would: its Python blocks are one plugin file, which
adds a loss, a reward, a server kind and a benchmark from outside the package (registries only),
and each is used through the command line."""

import json
import os
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from recipes import run_recipe
from safetensors.torch import load_file

DOC = Path(__file__).parents[1] / "docs" / "extending.md"


@pytest.fixture(scope="module")
def plugin(tmp_path_factory) -> Path:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) == 4, "the page shows a loss, a reward, an engine and a benchmark"
    path = tmp_path_factory.mktemp("plugin") / "my_plugin.py"
    path.write_text("\n\n".join(blocks))
    return path


SMALL = ["groups_per_batch=4", "group_size=4", "max_tokens=48", "save_every=0", "eval.benchmarks=[]"]


def _rows(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_a_loss_and_a_reward_from_a_plugin_train_tiny(plugin, tmp_path):
    runs = {}
    # One step of each loss (their samples then differ by float noise, and sampling amplifies it);
    # three with the new reward.
    for name, overrides in {"is": ["max_steps=1"], "reinforce": ["max_steps=1", "loss=reinforce"],
                            "penalty": ["max_steps=3", "rewards.length_penalty=0.5"]}.items():
        done = run_recipe("grpo", "configs/tiny/grpo.yaml", tmp_path / name, f"plugins=[{plugin}]", *SMALL,
                          *overrides)
        assert done.returncode == 0, done.stderr
        runs[name] = [r for r in _rows(tmp_path / name) if "reward/mean" in r]
        assert [r["step"] for r in runs[name]] == list(range(1, len(runs[name]) + 1)) and runs[name]
    # The new loss ran: its own diagnostic is logged, its loss value is -A log p, not -rho A.
    assert all("train/positive_advantage" in r for r in runs["reinforce"] if "train/loss" in r)
    assert [r.get("train/loss") for r in runs["reinforce"]] != [r.get("train/loss") for r in runs["is"]]
    # On policy its gradient is the importance-sampling loss's, so the two train the same adapter.
    a = load_file(tmp_path / "is" / "final" / "adapter_model.safetensors")
    b = load_file(tmp_path / "reinforce" / "final" / "adapter_model.safetensors")
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a) and any(a[k].abs().sum() > 0 for k in a)
    # The new reward is part of the reward: correct + 0.5 x (-tokens / 100).
    for row in runs["penalty"]:
        expected = row["reward/correct"] - 0.5 * row["tokens/mean"] / 100
        assert row["reward/length_penalty"] == pytest.approx(-row["tokens/mean"] / 100)
        assert row["reward/mean"] == pytest.approx(expected)


class _Recorder(BaseHTTPRequestHandler):
    paths: list = []

    def log_message(self, *args):
        pass

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.paths.append(self.path)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")


def test_a_server_kind_from_a_plugin_loads_through_its_own_routes(plugin, tmp_path):
    from mathrl.plugins import load_plugin
    from mathrl.train.learner import PolicyRef
    from mathrl.train.rollouts import RolloutSettings, ServerRollouts, ServerSettings

    load_plugin(str(plugin))
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        settings = RolloutSettings(engine="server", server=ServerSettings(urls=(url,), kind="my-server"))
        engine = ServerRollouts(settings, settings.server.urls, "tiny", kind=settings.server.kind)
        engine.load(PolicyRef(1, tmp_path))
        assert _Recorder.paths == ["/adapters/load", "/reset_prefix_cache"]
        assert engine.version == 1
    finally:
        server.shutdown()
        server.server_close()


def test_a_benchmark_from_a_plugin_evaluates_by_name(plugin, tmp_path):
    rows = [{"problem": f"What is {a} + {a}?", "answer": str(2 * a)} for a in range(1, 5)]
    (tmp_path / "my_bench.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    done = subprocess.run([sys.executable, "-m", "mathrl.cli", "eval", "--model", "tiny", "--benchmarks",
                           "my_bench", "--data-dir", str(tmp_path), "--max-tokens", "16",
                           "--out", str(tmp_path / "ev")],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "MATHRL_PLUGINS": str(plugin)})
    assert done.returncode == 0, done.stderr
    metrics = json.loads((tmp_path / "ev" / "eval" / "my_bench" / "metrics.json").read_text())
    assert metrics["problems"] == 4 and metrics["source"] == str(tmp_path / "my_bench.jsonl")
