"""The trainer/rollout seam: publishing, `mathrl serve`'s control endpoints, the server engine."""

import json
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from recipes import free_port, kill_after, logged_steps, port_closes, port_open, run_recipe

from mathrl.models import load_model, load_tokenizer
from mathrl.prompts import PromptProtocol
from mathrl.sampling import SamplingParams, encode_prompt
from mathrl.sampling.hf import HFSampler
from mathrl.serve import make_server
from mathrl.tasks import arith
from mathrl.train.learner import PolicyRef
from mathrl.train.local import KEEP_PUBLISHED, LocalLearner, publish
from mathrl.train.rollouts import (
    InProcessRollouts,
    RolloutError,
    RolloutSettings,
    ServerRollouts,
    ServerSettings,
)

GREEDY = SamplingParams(temperature=0, max_tokens=24)


def _tiny():
    return load_model("tiny", torch.device("cpu"), torch.float32)


def _adapter(folder, seed):
    """A LoRA adapter with random (non-zero) weights, saved as a trainer publishes one."""
    torch.manual_seed(seed)
    model = get_peft_model(_tiny(), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                               init_lora_weights=False))
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def prompts():
    tokenizer = load_tokenizer("tiny")
    problems = arith.generate("test", 3, seed=1, levels=[1, 2])
    return [encode_prompt(tokenizer, PromptProtocol().messages(p)) for p in problems]


@pytest.fixture()
def served():
    """`mathrl serve --enable-lora` in this process, on loopback: (base URL, server)."""
    server = make_server(HFSampler(_tiny(), load_tokenizer("tiny")), load_tokenizer("tiny"), "tiny",
                         port=0, enable_lora=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", server
    server.shutdown()
    server.server_close()


def _post(url, body):
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def _texts(url, model, prompts):
    status, reply = _post(f"{url}/v1/completions", {"model": model, "prompt": prompts[0], "max_tokens": 24,
                                                     "temperature": 0, "logprobs": 1})
    assert status == 200, reply
    return reply["choices"][0]["token_ids"]


def _local(model, prompts):
    return list(HFSampler(model, load_tokenizer("tiny")).sample(prompts[:1], 1, GREEDY)[0][0].token_ids)


def test_served_adapters_load_replace_and_unload_at_run_time(served, prompts, tmp_path):
    url, _ = served
    a, b = _adapter(tmp_path / "a", 1), _adapter(tmp_path / "b", 2)
    base_ids = _texts(url, "tiny", prompts)
    assert base_ids == _local(_tiny(), prompts)

    assert _post(f"{url}/v1/load_lora_adapter", {"lora_name": "policy", "lora_path": str(a)})[0] == 200
    with_a = _texts(url, "policy", prompts)
    assert with_a == _local(PeftModel.from_pretrained(_tiny(), str(a)), prompts) != base_ids
    assert _texts(url, "tiny", prompts) == base_ids  # the base name still samples the base model

    status, reply = _post(f"{url}/v1/load_lora_adapter", {"lora_name": "policy", "lora_path": str(b)})
    assert status == 400 and "load_inplace" in reply["error"]["message"]
    assert _post(f"{url}/v1/load_lora_adapter",
                 {"lora_name": "policy", "lora_path": str(b), "load_inplace": True})[0] == 200
    assert _texts(url, "policy", prompts) == _local(PeftModel.from_pretrained(_tiny(), str(b)), prompts)

    with urllib.request.urlopen(f"{url}/v1/models") as response:
        assert [m["id"] for m in json.loads(response.read())["data"]] == ["tiny", "policy"]
    assert _post(f"{url}/v1/unload_lora_adapter", {"lora_name": "policy"})[0] == 200
    status, reply = _post(f"{url}/v1/completions", {"model": "policy", "prompt": prompts[0], "max_tokens": 4})
    assert status == 404 and "policy" in reply["error"]["message"]
    assert _texts(url, "tiny", prompts) == base_ids
    assert _post(f"{url}/v1/unload_lora_adapter", {"lora_name": "policy"})[0] == 404


def test_bad_adapter_requests_name_the_problem(served, tmp_path):
    url, _ = served
    status, reply = _post(f"{url}/v1/load_lora_adapter", {"lora_name": "p", "lora_path": str(tmp_path)})
    assert status == 400 and "not a PEFT adapter folder" in reply["error"]["message"]
    status, reply = _post(f"{url}/v1/load_lora_adapter", {"lora_name": "p"})
    assert status == 400 and "lora_path" in reply["error"]["message"]


def test_a_sleeping_server_refuses_to_sample_until_woken(served, prompts):
    url, _ = served
    assert _post(f"{url}/sleep", {})[0] == 200
    with urllib.request.urlopen(f"{url}/is_sleeping") as response:
        assert json.loads(response.read()) == {"is_sleeping": True}
    status, reply = _post(f"{url}/v1/completions", {"prompt": prompts[0], "max_tokens": 4})
    assert status == 503 and "sleeping" in reply["error"]["message"]
    assert _post(f"{url}/wake_up", {})[0] == 200
    assert _post(f"{url}/reset_prefix_cache", {})[0] == 200
    assert _post(f"{url}/v1/completions", {"prompt": prompts[0], "max_tokens": 4})[0] == 200


def test_server_rollouts_sample_the_published_adapter_across_servers(prompts, tmp_path):
    servers = []
    for _ in range(2):
        server = make_server(HFSampler(_tiny(), load_tokenizer("tiny")), load_tokenizer("tiny"), "tiny",
                             port=0, enable_lora=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
    try:
        urls = tuple(f"http://127.0.0.1:{s.server_address[1]}/v1" for s in servers)
        engine = _engine(urls)
        engine.load(PolicyRef(3, _adapter(tmp_path / "a", 1)))
        assert engine.version == 3
        groups = engine.sample(prompts, 2, GREEDY)  # greedy, n=2: one request of n=1, repeated
        local = HFSampler(PeftModel.from_pretrained(_tiny(), str(tmp_path / "a")), load_tokenizer("tiny"))
        expected = local.sample(prompts, 1, GREEDY)
        for got, want in zip(groups, expected, strict=True):
            assert len(got) == 2 and got[0].token_ids == got[1].token_ids == want[0].token_ids
            assert got[0].logprobs == pytest.approx(want[0].logprobs, abs=1e-4)
        # Both servers loaded the adapter: each one serves it by name.
        for url in urls:
            assert _texts(url.removesuffix("/v1"), "mathrl-policy", prompts) == list(expected[0][0].token_ids)
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


def _engine(urls, **settings):
    settings = RolloutSettings(engine="server", server=ServerSettings(urls=tuple(urls)), **settings)
    return ServerRollouts(settings, settings.server.urls, "tiny")


def test_servers_sleep_while_the_trainer_steps_and_wake_to_load(served, prompts, tmp_path):
    url, server = served
    engine = _engine([f"{url}/v1"], sleep_while_training=True)
    engine.load(PolicyRef(0, _adapter(tmp_path / "a", 1)))
    engine.sample(prompts[:1], 2, GREEDY)
    engine.pause()
    with urllib.request.urlopen(f"{url}/is_sleeping") as response:
        assert json.loads(response.read()) == {"is_sleeping": True}
    engine.load(PolicyRef(1, _adapter(tmp_path / "b", 2)))  # wakes, then loads
    assert len(engine.sample(prompts[:1], 2, GREEDY)[0]) == 2
    engine.pause()
    engine.wake()
    with urllib.request.urlopen(f"{url}/is_sleeping") as response:
        assert json.loads(response.read()) == {"is_sleeping": False}


class _Stripped(BaseHTTPRequestHandler):
    """A server that answers completions without token ids or without logprobs."""

    drop = "token_ids"

    def log_message(self, *args):
        pass

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        choice = {"index": 0, "text": " 4", "finish_reason": "stop", "token_ids": [7, 8],
                  "logprobs": {"tokens": ["a", "b"], "token_logprobs": [-0.1, -0.2]}}
        choice.pop(self.drop)
        data = json.dumps({"choices": [choice]} if "completions" in self.path else {}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.mark.parametrize("drop, message", [("token_ids", "without token ids"),
                                           ("logprobs", "0 logprobs for 2")])
def test_a_server_that_omits_ids_or_logprobs_fails_with_one_clear_message(drop, message, prompts, tmp_path):
    handler = type("Handler", (_Stripped,), {"drop": drop})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        engine = _engine([url])
        engine.load(PolicyRef(0, tmp_path))
        with pytest.raises(RolloutError, match=message):
            engine.sample(prompts[:1], 2, SamplingParams(temperature=1.0, max_tokens=4))
    finally:
        server.shutdown()
        server.server_close()


def test_publishing_writes_whole_adapters_and_keeps_the_last_two(tmp_path):
    learner = LocalLearner("tiny", load_tokenizer("tiny"), tmp_path / "run")
    engine = InProcessRollouts(learner, batch_size=8)
    engine.sync(0, learner)  # in process: the engine samples the trained module, nothing is written
    assert engine.version == 0 and not (tmp_path / "run" / "published").exists()
    model = get_peft_model(_tiny(), LoraConfig(r=2, target_modules=["q_proj"]))
    refs = [publish(model, tmp_path, step) for step in range(4)]
    assert [r.version for r in refs] == [0, 1, 2, 3]
    kept = sorted(p.name for p in (tmp_path / "published").iterdir())
    assert kept == [f"step_{s:06d}" for s in range(4 - KEEP_PUBLISHED, 4)]
    assert (refs[-1].path / "adapter_model.safetensors").is_file() and refs[-1].kind == "adapter"
    # A run killed after step 3 and resumed from its step-1 checkpoint publishes step 1 again:
    # the killed run's later folders (2, 3) go, and the one just published stays.
    resumed = publish(model, tmp_path, 1)
    assert resumed.path.is_dir() and (resumed.path / "adapter_config.json").is_file()
    assert sorted(p.name for p in (tmp_path / "published").iterdir()) == ["step_000001"]
    full = publish(_tiny(), tmp_path / "full", 5)  # full fine-tuning: the model
    assert full.kind == "weights" and (full.path / "model.safetensors").is_file()


def test_full_weights_publish_replaces_the_served_model_in_place(served, prompts, tmp_path):
    url, _ = served
    changed = _tiny()
    with torch.no_grad():
        for p in changed.parameters():
            p.add_(0.05 * torch.randn_like(p))
    ref = publish(changed, tmp_path, 7)
    engine = _engine([f"{url}/v1"])
    engine.load(ref)
    got = engine.sample(prompts[:1], 1, GREEDY)[0][0]
    want = HFSampler(changed, load_tokenizer("tiny")).sample(prompts[:1], 1, GREEDY)[0][0]
    assert got.token_ids == want.token_ids and got.logprobs == pytest.approx(want.logprobs, abs=1e-4)
    status, reply = _post(f"{url}/v1/load_weights", {"path": str(tmp_path)})
    assert status == 400 and "no .safetensors" in reply["error"]["message"]


def test_settings_refuse_a_server_engine_without_urls():
    with pytest.raises(ValueError, match="rollout.server.urls"):
        RolloutSettings(engine="server")


# ---- GRPO through `mathrl serve` as the rollout engine (end to end; one step ahead: test_ahead.py) ----

@pytest.mark.slow
def test_a_killed_run_with_the_engine_it_started_resumes_with_each_step_once(tmp_path):
    port = free_port()
    # rollout.engine=serve: the trainer starts `mathrl serve --enable-lora` on this port itself.
    settings = ["max_steps=6", "groups_per_batch=4", "group_size=4", "save_every=2", "max_tokens=64",
                "eval.benchmarks=[]", "rollout.engine=serve", f"rollout.port={port}"]
    run = tmp_path / "run"
    process = run_recipe("grpo", "configs/tiny/grpo.yaml", run, *settings, wait=False)
    kill_after(process, lambda: logged_steps(run, "reward/mean"), 3)
    assert 3 <= max(logged_steps(run, "reward/mean")) < 6, "the kill should land mid-run"
    # The engine dies with the trainer it served (SIGKILL included): nothing is left on the port.
    # A bounded wait for the kernel to deliver that, not a speed check.
    assert port_closes(port), "the rollout engine outlived its killed trainer"
    resumed = run_recipe("grpo", "configs/tiny/grpo.yaml", run, *settings)
    assert resumed.returncode == 0, resumed.stderr
    assert not port_open(port)  # and a finished run stops it
    assert logged_steps(run, "reward/mean") == list(range(1, 7))
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    # The resumed run published the checkpoint's weights before its first step.
    assert [r["rollout/policy_version"] for r in rows if "reward/mean" in r] == list(range(6))
    assert (run / "final" / "adapter_model.safetensors").is_file()
