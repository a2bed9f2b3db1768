"""GRPO and eval with real vLLM as the rollout engine: its CPU build serving the tiny model.

Runs where ``MATHRL_VLLM_PYTHON`` names a Python with vLLM (``make vllm-cpu`` builds one in
``build/vllm-venv``; CI sets it and so requires these tests); skips elsewhere. vLLM is started as
a user starts it for mathrl: runtime LoRA updates on, processed logprobs, the dev endpoints
(``/reset_prefix_cache``) on; the CPU-only settings are those the CPU build needs for this model.
"""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from recipes import run_recipe

from mathrl.models import TINY_PATH

VLLM_PYTHON = os.environ.get("MATHRL_VLLM_PYTHON")
# A shorter GRPO run than the in-process recipe's test (vLLM's LoRA path is slow on a CPU):
# STEPS steps of GROUPS problems x 8 samples. Measured here: 26.3% -> 35.0% (± 5.4), 3.9 s a step.
STEPS, GROUPS, GAIN = 40, 8, 0.05
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not VLLM_PYTHON, reason="no vLLM (make vllm-cpu; MATHRL_VLLM_PYTHON)")]


@pytest.fixture(scope="module")
def vllm(tmp_path_factory):
    """A vLLM OpenAI server for the tiny model on a free port, started as a user starts one for
    mathrl (``rollout.engine: server``, ``mathrl eval --base-url``): its base URL."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path_factory.mktemp("vllm") / "server.log"
    env = {**os.environ, "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True", "VLLM_SERVER_DEV_MODE": "1",
           "VLLM_CPU_KVCACHE_SPACE": "1"}
    command = [VLLM_PYTHON, "-m", "vllm.entrypoints.openai.api_server", "--model", str(TINY_PATH),
               "--served-model-name", "tiny", "--port", str(port), "--dtype", "float32",
               "--logprobs-mode", "processed_logprobs", "--enable-lora", "--max-lora-rank", "32",
               # The CPU build: no graphs, short contexts, and no chunked prefill (with it,
               # concurrent seeded requests stop the CPU engine).
               "--enforce-eager", "--max-model-len", "1024", "--no-enable-chunked-prefill",
               "--max-num-batched-tokens", "32768"]
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env,
                                   start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    while True:  # no clock: up when healthy, failed when it exits
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=5):
                break
        except OSError:
            if process.poll() is not None:
                pytest.fail(f"vLLM did not start:\n{log.read_text()[-3000:]}")
            time.sleep(2)
    yield f"{url}/v1"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _metrics(path: Path) -> dict:
    return json.loads(path.read_text())


# The CPU build's flags, passed through rollout.vllm.args when mathrl starts vLLM itself.
CPU_ARGS = ("[--dtype, float32, --enforce-eager, --max-model-len, '1024', --no-enable-chunked-prefill, "
            "--max-num-batched-tokens, '32768']")


def test_grpo_with_vllm_as_its_engine_improves_the_model_with_matching_logprobs(tmp_path, monkeypatch):
    # rollout.engine=vllm: mathrl starts vLLM itself (VLLM_CPU_KVCACHE_SPACE is the CPU build's).
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "1")
    base = _metrics(TINY_PATH / "pretrain.json")["accuracy"]  # greedy, the same 300 arith problems
    out = run_recipe("grpo", "configs/tiny/grpo.yaml", tmp_path / "run", f"max_steps={STEPS}",
                     f"groups_per_batch={GROUPS}", "save_every=0", "rollout.engine=vllm",
                     f"rollout.vllm.python={VLLM_PYTHON}", f"rollout.vllm.args={CPU_ARGS}")
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "reward/mean" in r]
    assert [r["rollout/policy_version"] for r in steps] == list(range(STEPS))  # the adapter, every step
    # fp32 on both sides, processed logprobs: vLLM's sampling distribution is the trainer's.
    assert all(abs(r["train/kl_sampler_trainer"]) < 1e-5 for r in steps if r.get("train/kl_sampler_trainer"))
    accuracy = _metrics(tmp_path / "run" / "eval" / "arith" / "metrics.json")["accuracy"]
    assert accuracy >= base + GAIN, (base, accuracy)


def test_eval_through_vllm_matches_the_in_process_eval(vllm, tmp_path):
    def accuracy(*args, out):
        result = subprocess.run([sys.executable, "-m", "mathrl.cli", "eval", "--model", "tiny",
                                 "--benchmarks", "arith", "--num-problems", "100", "--max-tokens", "256",
                                 "--out", str(out), *args],
                                capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, result.stderr
        return _metrics(out / "eval" / "arith" / "metrics.json")

    served = accuracy("--base-url", vllm, out=tmp_path / "vllm")
    local = accuracy(out=tmp_path / "local")
    assert served["problems"] == local["problems"] == 100
    # Greedy on both: the same model, so within the interval (measured: equal).
    assert abs(served["accuracy"] - local["accuracy"]) <= local["ci95_normal"], (served, local)
