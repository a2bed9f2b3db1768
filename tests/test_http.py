"""The HTTP sampler against a real `mathrl serve` on loopback, faults included."""

import json
import os
import re
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mathrl.prompts import PromptProtocol
from mathrl.sampling import SamplingParams
from mathrl.sampling.hf import HFSampler
from mathrl.sampling.openai import OpenAISampler, SamplerError
from mathrl.tasks import arith

pytestmark = pytest.mark.slow  # end-to-end: servers and whole commands (make test-fast skips)

PROBLEMS = arith.generate("test", 4, seed=0, levels=[1, 2])


def _start_server(port=0):
    command = [sys.executable, "-m", "mathrl.cli", "serve", "--model", "tiny", "--port", str(port)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = process.stdout.readline()
    match = re.search(r"http://127\.0\.0\.1:(\d+)/v1", line)
    assert match, f"server did not start: {line!r}"
    return process, int(match[1])


@pytest.fixture(scope="module")
def server():
    process, port = _start_server()
    yield port
    process.kill()
    process.wait()


def test_http_sampler_matches_the_in_process_sampler(server, tiny):
    params = SamplingParams(temperature=0, max_tokens=64)
    prompts = [PromptProtocol().messages(p) for p in PROBLEMS]
    remote = OpenAISampler(f"http://127.0.0.1:{server}/v1", "tiny").sample(prompts, 2, params)
    local = HFSampler(*tiny).sample(prompts, 2, params)
    for r_group, h_group in zip(remote, local, strict=True):
        for r, h in zip(r_group, h_group, strict=True):
            assert (r.token_ids, r.text, r.finish_reason) == (h.token_ids, h.text, h.finish_reason)
            assert r.n_tokens == h.n_tokens and r.n_thinking_tokens == h.n_thinking_tokens
            assert r.logprobs == pytest.approx(h.logprobs, abs=1e-5)


def test_token_id_prompts_use_the_completions_endpoint(server, tiny):
    model, tokenizer = tiny
    params = SamplingParams(temperature=0.7, max_tokens=32, seed=3)
    ids = HFSampler(model, tokenizer).encode(PromptProtocol().messages(PROBLEMS[0]), params)
    (group,) = OpenAISampler(f"http://127.0.0.1:{server}/v1", "tiny").sample([ids], 3, params)
    assert len(group) == 3 and all(c.n_tokens == len(c.token_ids) == len(c.logprobs) for c in group)
    assert all(c.text == tokenizer.decode(c.token_ids, skip_special_tokens=True) for c in group)


def test_bad_requests_fail_with_the_server_message_naming_the_field(server):
    sampler = OpenAISampler(f"http://127.0.0.1:{server}/v1", "tiny", backoff_s=0.01)
    with pytest.raises(SamplerError, match="HTTP 400.*'max_tokens' must be an integer"):
        sampler.sample([PromptProtocol().messages(PROBLEMS[0])], 1, SamplingParams(max_tokens="many"))


def test_client_survives_a_server_killed_and_restarted(tmp_path):
    process, port = _start_server()
    process.kill()
    process.wait()
    sampler = OpenAISampler(f"http://127.0.0.1:{port}/v1", "tiny", backoff_s=0.5, max_retries=8)
    result = {}
    client = threading.Thread(target=lambda: result.update(out=sampler.sample(
        [PromptProtocol().messages(PROBLEMS[0])], 1, SamplingParams(temperature=0, max_tokens=32))))
    client.start()  # connection refused: retrying with backoff
    time.sleep(1.0)
    restarted, _ = _start_server(port)
    try:
        client.join(timeout=120)
        assert result["out"][0][0].finish_reason == "stop"
    finally:
        restarted.kill()
        restarted.wait()


def test_client_retries_503_and_429():
    calls = []
    reply = {"choices": [{"index": 0, "finish_reason": "stop", "message": {"content": "\\boxed{5}"},
                          "logprobs": {"content": [{"token": "x", "logprob": -0.5}]}}]}

    class Flaky(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            calls.append(self.path)
            status = {1: 503, 2: 429, 5: 400}.get(len(calls), 200)
            data = json.dumps(reply if status == 200 else {"error": {"message": "busy"}}).encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        sampler = OpenAISampler(f"http://127.0.0.1:{server.server_address[1]}/v1", "m", backoff_s=0.05)
        ((c,),) = sampler.sample([[{"role": "user", "content": "hi"}]], 1, SamplingParams())
        assert len(calls) == 3 and c.text == "\\boxed{5}" and c.logprobs == (-0.5,) and c.n_tokens == 1
        never = OpenAISampler(f"http://127.0.0.1:{server.server_address[1]}/v1", "m", backoff_s=0.01,
                              max_retries=0)
        calls.clear()
        with pytest.raises(SamplerError, match="HTTP 503"):
            never.sample([[{"role": "user", "content": "hi"}]], 1, SamplingParams())
        calls[:] = [0, 0, 0, 0]  # the next reply is a 400: a client error is final, never retried
        patient = OpenAISampler(f"http://127.0.0.1:{server.server_address[1]}/v1", "m", backoff_s=0.01)
        with pytest.raises(SamplerError, match="HTTP 400"):
            patient.sample([[{"role": "user", "content": "hi"}]], 1, SamplingParams())
        assert len(calls) == 5
    finally:
        server.shutdown()


def test_eval_over_http_equals_eval_in_process(server, tmp_path):
    def run(out, *extra):
        command = [sys.executable, "-m", "mathrl.cli", "eval", "--model", "tiny", "--benchmarks", "arith",
                   "--num-problems", "24", "--out", str(out), *extra]
        return subprocess.run(command, capture_output=True, text=True, timeout=300,
                              env={**os.environ, "COLUMNS": "200"})

    assert run(tmp_path / "local").returncode == 0
    remote = run(tmp_path / "remote", "--base-url", f"http://127.0.0.1:{server}/v1")
    assert remote.returncode == 0, remote.stderr
    assert ((tmp_path / "local" / "eval" / "arith" / "samples.jsonl").read_text()
            == (tmp_path / "remote" / "eval" / "arith" / "samples.jsonl").read_text())
