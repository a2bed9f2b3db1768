"""`mathrl serve --tinker` driven by the real Tinker SDK (tinker==0.38.0) on loopback: every
endpoint a training or sampling client uses, checked against mathrl's own learner."""

import json
import math
import threading
import urllib.error
import urllib.request

import pytest
import torch

tinker = pytest.importorskip("tinker")

from mathrl.models import TINY_PATH, load_tokenizer  # noqa: E402
from mathrl.tinker.server import Settings, lora_settings, make_server  # noqa: E402
from mathrl.train.learner import AdamParams, Datum  # noqa: E402
from mathrl.train.local import LocalLearner, Plan  # noqa: E402
from mathrl.train.losses import Loss  # noqa: E402

BASE = str(TINY_PATH)  # a folder, so the SDK's tokenizer lookup finds it offline
ADAM = dict(learning_rate=5e-3, beta1=0.9, beta2=0.95, eps=1e-8)


def _serve(tmp_path, **settings):
    server = make_server(Settings(models={BASE: "tiny"}, root=tmp_path / "tinker", device="cpu",
                                  dtype="float32", poll_s=2.0, **settings), port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


@pytest.fixture()
def served(tmp_path, monkeypatch):
    server, url = _serve(tmp_path)
    monkeypatch.setenv("TINKER_BASE_URL", url)
    monkeypatch.setenv("TINKER_API_KEY", "tml-local")
    monkeypatch.setenv("TINKER_TELEMETRY", "0")
    yield server
    server.shutdown()
    server.server_close()


def _sequences(n=5, seed=0):
    import random

    rng = random.Random(seed)
    return [[rng.randrange(5, 250) for _ in range(rng.randint(6, 14))] for _ in range(n)]


def _tinker_datum(tokens, start):
    weights = [0.0] * (start - 1) + [1.0] * (len(tokens) - start)
    return tinker.Datum(model_input=tinker.ModelInput.from_ints(tokens[:-1]),
                        loss_fn_inputs={"target_tokens": tokens[1:], "weights": weights})


def _local_learner(tmp_path, rank=8, seed=0):
    torch.manual_seed(seed)
    return LocalLearner("tiny", load_tokenizer("tiny"), tmp_path / "local", lora=lora_settings(rank),
                        plan=Plan(micro_batch_size=64, all_positions=True))


def test_training_calls_match_the_in_process_learner(served, tmp_path):
    sequences = _sequences()
    client = tinker.ServiceClient().create_lora_training_client(base_model=BASE, rank=8, seed=0).result()
    local = _local_learner(tmp_path)
    data = [_tinker_datum(s, 4) for s in sequences]
    ours = [Datum.from_sequence(s, 4) for s in sequences]
    cross_entropy = Loss("cross_entropy", entropy=False)
    for _ in range(2):
        result = client.forward_backward(data, "cross_entropy").result()
        client.optim_step(tinker.AdamParams(**ADAM)).result()
        expected = local.forward_backward(ours, cross_entropy, return_logprobs=True)
        local.optim_step(AdamParams(**ADAM))
        assert result.metrics["loss:sum"] == pytest.approx(expected.metrics["train/loss"], rel=1e-5)
    # The weights after two steps: exactly the in-process learner's.
    model_id = client.model_id
    served_state = served.service.models[model_id].learner.model.state_dict()
    for name, value in local.model.state_dict().items():
        assert torch.allclose(served_state[name], value, atol=1e-6), name
    # forward: every position's logprob, as mathrl's own forward gives it.
    got = client.forward(data, "cross_entropy").result().loss_fn_outputs
    want = local.forward(ours, cross_entropy).logprobs
    for g, w in zip(got, want, strict=True):
        assert g["logprobs"].tolist() == pytest.approx(list(w), abs=1e-5)


def test_a_chunked_forward_backward_equals_one_call(tmp_path, monkeypatch):
    sequences = _sequences(7)
    states = []
    for chunk in (1024, 2):  # the SDK splits the request into chunks of this many datums
        server, url = _serve(tmp_path / str(chunk), fwdbwd_max_chunk_len=chunk)
        monkeypatch.setenv("TINKER_BASE_URL", url)
        monkeypatch.setenv("TINKER_API_KEY", "tml-local")
        monkeypatch.setenv("TINKER_TELEMETRY", "0")
        try:
            service = tinker.ServiceClient()
            client = service.create_lora_training_client(base_model=BASE, rank=8, seed=0).result()
            data = [_tinker_datum(s, 3) for s in sequences]
            result = client.forward_backward(data, "cross_entropy").result()
            assert len(result.loss_fn_outputs) == len(sequences)
            # The gradient the chunks accumulated, before the optimizer step uses it.
            model = server.service.models[client.model_id].learner.model
            grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
            logprobs = [o["logprobs"].tolist() for o in result.loss_fn_outputs]
            states.append((result.metrics["loss:sum"], logprobs, grads))
        finally:
            server.shutdown()
            server.server_close()
    (loss_a, logprobs_a, a), (loss_b, logprobs_b, b) = states
    assert loss_a == pytest.approx(loss_b, rel=1e-6)
    for x, y in zip(logprobs_a, logprobs_b, strict=True):  # other batch widths: float noise only
        assert x == pytest.approx(y, abs=1e-5)
    assert a.keys() == b.keys() and a
    for name in a:  # equal up to float32 summation order
        assert (a[name] - b[name]).abs().max() <= 1e-5 * a[name].abs().max() + 1e-9, name


def test_saved_state_reloads_to_the_same_loss_and_sampling_matches_the_trainer(served):
    sequences = _sequences()
    service = tinker.ServiceClient()
    client = service.create_lora_training_client(base_model=BASE, rank=8, seed=1).result()
    data = [_tinker_datum(s, 4) for s in sequences]
    client.forward_backward(data, "cross_entropy").result()
    client.optim_step(tinker.AdamParams(**ADAM)).result()
    loss = client.forward(data, "cross_entropy").result().metrics["loss:sum"]
    path = client.save_state("after-one-step").result().path
    assert path.endswith("/weights/after-one-step")
    again = service.create_training_client_from_state_with_optimizer(path).result()
    assert again.forward(data, "cross_entropy").result().metrics["loss:sum"] == pytest.approx(loss, rel=1e-6)
    listed = tinker.RestClient().list_checkpoints(client.model_id).result()
    assert [c.tinker_path for c in listed.checkpoints] == [path]

    # Sampling the published weights: the sampler's logprobs are the trainer's (fp32, both here).
    sampler = client.save_weights_and_get_sampling_client()
    prompt = sequences[0][:6]
    params = tinker.SamplingParams(max_tokens=8, temperature=1.0, seed=3)
    reply = sampler.sample(tinker.ModelInput.from_ints(prompt), num_samples=4,
                           sampling_params=params).result()
    assert len(reply.sequences) == 4
    rescored = []
    for seq in reply.sequences:
        full = prompt + list(seq.tokens)
        out = client.forward([_tinker_datum(full, len(prompt))], "cross_entropy").result()
        rescored.append(out.loss_fn_outputs[0]["logprobs"].tolist()[len(prompt) - 1:])
    k1 = [s - t for seq, r in zip(reply.sequences, rescored, strict=True)
          for s, t in zip(seq.logprobs, r, strict=True)]
    assert abs(sum(k1) / len(k1)) < 1e-4 and max(map(abs, k1)) < 1e-3
    # compute_logprobs: the prompt's logprobs under the same weights (None for the first token).
    scored = sampler.compute_logprobs(tinker.ModelInput.from_ints(prompt)).result()
    trainer = client.forward([_tinker_datum(prompt, 1)], "cross_entropy").result().loss_fn_outputs[0]
    assert scored[0] is None
    assert scored[1:] == pytest.approx(trainer["logprobs"].tolist(), abs=1e-5)


def test_rl_losses_and_their_config_reach_the_learner(served):
    client = tinker.ServiceClient().create_lora_training_client(base_model=BASE, rank=4, seed=2).result()
    tokens = _sequences(1)[0]
    n = len(tokens) - 1
    datum = tinker.Datum(model_input=tinker.ModelInput.from_ints(tokens[:-1]),
                         loss_fn_inputs={"target_tokens": tokens[1:], "logprobs": [-1.0] * n,
                                         "advantages": [0.0] * 3 + [1.0] * (n - 3)})
    for loss, config in (("importance_sampling", None), ("ppo", {"clip_low_threshold": 0.9,
                                                                  "clip_high_threshold": 1.1}),
                         ("cispo", None), ("dro", {"beta": 0.05})):
        out = client.forward([datum], loss, loss_fn_config=config).result()
        logp = out.loss_fn_outputs[0]["logprobs"].tolist()
        assert len(logp) == n and math.isfinite(out.metrics["loss:sum"])
    with pytest.raises(tinker.RequestFailedError, match="stable_reinforce"):
        client.forward([datum], "stable_reinforce").result()
    with pytest.raises(tinker.RequestFailedError, match="beta"):
        client.forward([datum], "dro").result()


def test_a_wrong_api_key_is_a_401(tmp_path):
    server, url = _serve(tmp_path, api_key="tml-right")
    try:
        request = urllib.request.Request(f"{url}/api/v1/create_session", json.dumps({}).encode(),
                                         {"X-API-Key": "tml-wrong", "Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(request, timeout=30)
        assert err.value.code == 401 and "API key" in err.value.read().decode()
        request.headers["X-api-key"] = "tml-right"
        with urllib.request.urlopen(request, timeout=30) as response:
            assert "session_id" in json.loads(response.read())
    finally:
        server.shutdown()
        server.server_close()


def test_what_is_not_served_fails_through_the_sdk_with_the_reason(served):
    service = tinker.ServiceClient()
    with pytest.raises(tinker.RequestFailedError, match="not served here"):
        service.create_lora_training_client(base_model="Qwen/Qwen3-8B", rank=8).result()


def _post(url, route, body, key="tml-local"):
    request = urllib.request.Request(f"{url}/api/v1/{route}", json.dumps(body).encode(),
                                     {"X-API-Key": key, "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def _result(url, request_id):
    for _ in range(100):  # each poll waits up to the server's long-poll (2 s here)
        try:
            return _post(url, "retrieve_future", {"request_id": request_id})
        except urllib.error.HTTPError as err:
            assert err.code == 408  # still running
    raise AssertionError("no result")


def test_a_retried_call_is_answered_not_applied_twice_and_a_silent_client_is_freed(tmp_path):
    server, url = _serve(tmp_path, heartbeat_timeout_s=1.0)
    try:
        session = _post(url, "create_session", {"tags": [], "type": "create_session"})["session_id"]
        created = _post(url, "create_model", {"session_id": session, "model_seq_id": 0, "base_model": BASE,
                                               "lora_config": {"rank": 4, "seed": 0}, "type": "create_model"})
        model_id = _result(url, created["request_id"])["model_id"]
        learner, applied = server.service.models[model_id].learner, []
        original = learner.optim_step
        learner.optim_step = lambda adam: applied.append(adam) or original(adam)
        step = {"model_id": model_id, "seq_id": 1, "type": "optim_step",
                "adam_params": {"learning_rate": 1e-3}}
        first, retried = _post(url, "optim_step", step), _post(url, "optim_step", step)
        assert first["request_id"] == retried["request_id"]
        assert "grad_norm:mean" in _result(url, first["request_id"])["metrics"]
        assert len(applied) == 1
        # No heartbeat from this client: within a few reaper rounds its model is gone.
        assert wait_for(lambda: model_id not in server.service.models)
    finally:
        server.shutdown()
        server.server_close()


def wait_for(condition, rounds=200):
    import time

    for _ in range(rounds):  # the reaper runs every heartbeat_timeout / 2; a bounded wait for it
        if condition():
            return True
        time.sleep(0.1)
    return condition()
