"""`learner: tinker`: mathrl's own SFT and GRPO loops trained through the real Tinker SDK
(tinker==0.38.0) against `mathrl serve --tinker` on loopback, compared with the same recipes
trained in process: the same adapter, resumable after a SIGKILL, a wrong key or a service error,
and every setting the service has no equivalent for refused before any call."""

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from recipes import kill_after, logged_steps, run_recipe
from safetensors.torch import load_file

pytest.importorskip("tinker")

from mathrl.config import load_config  # noqa: E402
from mathrl.errors import UserError  # noqa: E402
from mathrl.tinker import server as tinker_server  # noqa: E402
from mathrl.tinker.server import RequestFailed, Service, Settings, make_server  # noqa: E402
from mathrl.train.grpo import GRPOConfig  # noqa: E402

KEY = "tml-test-key"
ADAPTER = "adapter_model.safetensors"
# The service samples each prompt's group alone (batch 8 = one group); the in-process run is told
# to do the same (sampler_batch_size=8), so both decode the same shapes and draw the same floats.
SAME_SHAPES = ["sampler_batch_size=8", "micro_batch_size=64"]


@pytest.fixture()
def service(tmp_path, monkeypatch):
    """`mathrl serve --tinker`'s server in this process (its calls can be made to fail), and the
    environment a user sets: the key and the URL."""
    server = make_server(Settings(models={"tiny": "tiny"}, root=tmp_path / "service", device="cpu",
                                  dtype="float32", api_key=KEY, batch_size=8), port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("TINKER_API_KEY", KEY)
    monkeypatch.setenv("TINKER_TELEMETRY", "0")
    monkeypatch.delenv("TINKER_BASE_URL", raising=False)
    yield server, url
    server.shutdown()
    server.server_close()


def _tinker(url):
    return ["learner=tinker", f"tinker.base_url={url}"]


def _served_adapter(run: Path, root: Path) -> dict:
    """The final adapter of a Tinker run: final/tinker.json's sampler path, on the server's disk."""
    record = json.loads((run / "final" / "tinker.json").read_text())
    return load_file(root / record["sampler"].removeprefix("tinker://") / ADAPTER)


def _local_adapter(run: Path) -> dict:
    return load_file(run / "final" / ADAPTER)


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _assert_same(a: dict, b: dict, atol=1e-6):
    assert a.keys() == b.keys() and a
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst <= atol, f"adapters differ by {worst:.3g}"


def _no_key_written(run: Path):
    for f in run.rglob("*"):
        if f.is_file():
            assert KEY.encode() not in f.read_bytes(), f


@pytest.mark.slow
def test_grpo_on_tinker_is_the_in_process_run_and_a_killed_run_resumes_to_it(service, tmp_path):
    server, url = service
    settings = ["lora.alpha=32", "groups_per_batch=8", "max_steps=3", "save_every=1", "eval.benchmarks=[]",
                *SAME_SHAPES]
    local = run_recipe("grpo", "configs/tiny/grpo.yaml", tmp_path / "local", *settings)
    assert local.returncode == 0, local.stderr

    run = tmp_path / "remote"  # killed after its 2nd step, then the same command again
    process = run_recipe("grpo", "configs/tiny/grpo.yaml", run, *settings, *_tinker(url), wait=False)
    kill_after(process, lambda: logged_steps(run, "reward/mean"), 2)
    assert max(logged_steps(run, "reward/mean")) < 3, "the kill should land mid-run"
    resumed = run_recipe("grpo", "configs/tiny/grpo.yaml", run, *settings, *_tinker(url))
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stdout
    assert "Tinker at" in resumed.stdout and "--tinker --adapter" in resumed.stdout
    assert logged_steps(run, "reward/mean") == [1, 2, 3]  # nothing lost, nothing doubled
    # The uninterrupted in-process run's adapter, to 1e-6, from the same samples at every step.
    _assert_same(_served_adapter(run, tmp_path / "service"), _local_adapter(tmp_path / "local"))
    rows, local_rows = _metrics(run), _metrics(tmp_path / "local")
    assert [r["reward/mean"] for r in rows] == [r["reward/mean"] for r in local_rows]
    assert all(r["time/service_wait_s"] > 0 for r in rows if "train/loss" in r)
    _no_key_written(run)


def _traces(path: Path, n: int) -> Path:
    from mathrl.prompts import PromptProtocol
    from mathrl.tasks import arith
    from mathrl.traces import Trace

    problems = arith.generate("train", n, seed=5, levels=[1, 2, 3])
    path.write_text("".join(Trace(tuple(PromptProtocol().messages(p, answer=p.solution)),
                                  {"problem_id": p.id, "dataset": "arith_train"}).to_json() + "\n"
                            for p in problems))
    return path


@pytest.mark.slow
def test_sft_on_tinker_survives_a_wrong_key_and_a_service_error_and_ends_as_the_in_process_run(
        service, tmp_path, monkeypatch):
    server, url = service
    data = _traces(tmp_path / "traces.jsonl", 24)
    settings = [f"data={data}", "lora.alpha=32", "batch_size=8", "epochs=1", "save_every=1",
                "eval.benchmarks=[]"]
    local = run_recipe("sft", "configs/tiny/sft.yaml", tmp_path / "local", *settings)
    assert local.returncode == 0, local.stderr
    run = tmp_path / "remote"

    monkeypatch.setenv("TINKER_API_KEY", "tml-wrong")
    refused = run_recipe("sft", "configs/tiny/sft.yaml", run, *settings, *_tinker(url))
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "refused the API key ($TINKER_API_KEY)" in refused.stderr
    monkeypatch.setenv("TINKER_API_KEY", KEY)

    calls = []

    def failing(service, body):  # the service fails the second step's optimizer call
        calls.append(body)
        if len(calls) == 2:
            raise RequestFailed("the accelerator fell over (injected)")
        return Service.optim_step(service, body)

    with monkeypatch.context() as patch:
        patch.setitem(tinker_server._ROUTES, "optim_step", failing)
        failed = run_recipe("sft", "configs/tiny/sft.yaml", run, *settings, *_tinker(url))
    assert failed.returncode == 2 and "Traceback" not in failed.stderr
    assert "the Tinker service failed while running optim_step" in failed.stderr
    assert "injected" in failed.stderr
    assert logged_steps(run, "train/loss") == [1]

    resumed = run_recipe("sft", "configs/tiny/sft.yaml", run, *settings, *_tinker(url))
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stdout
    assert logged_steps(run, "train/loss") == [1, 2, 3]
    _assert_same(_served_adapter(run, tmp_path / "service"), _local_adapter(tmp_path / "local"))
    _no_key_written(run)


@pytest.mark.parametrize("override, named", [
    ("finetune=full", "finetune: the Tinker service trains LoRA adapters only"),
    ("lora.alpha=64", "lora.alpha: Tinker trains LoRA with alpha 32"),
    ("kl_coef=0.05", "kl_coef: the Tinker service has no frozen reference model"),
    ("temperature=0.7", "temperature: the Tinker service computes the trainer's log-probabilities at "
                        "temperature 1"),
    ("tis_cap=2.0", "tis_cap:"),
    ("lora.dropout=0.1", "lora.dropout:"),
    ("lora.target_modules=[q_proj]", "lora.target_modules:"),
    ("rollout.engine=serve", "rollout.engine:"),
])
def test_what_tinker_cannot_do_is_refused_naming_the_setting(override, named):
    overrides = ["learner=tinker", "lora.alpha=32", override]
    with pytest.raises(UserError, match="learner: tinker cannot run this recipe") as err:
        load_config(GRPOConfig, Path("configs/tiny/grpo.yaml"), overrides)
    assert named in str(err.value)
    load_config(GRPOConfig, Path("configs/tiny/grpo.yaml"), overrides[:2])  # alone, it is accepted


def test_a_refused_recipe_makes_no_call_and_an_unreachable_url_is_one_message(tmp_path, monkeypatch):
    monkeypatch.setenv("TINKER_API_KEY", KEY)
    refused = run_recipe("grpo", "configs/tiny/grpo.yaml", tmp_path / "a", "learner=tinker",
                         "tinker.base_url=http://127.0.0.1:9")  # alpha 64: refused before the URL is tried
    assert refused.returncode == 2 and "lora.alpha" in refused.stderr and "reach" not in refused.stderr
    assert not (tmp_path / "a").exists()
    unreachable = run_recipe("grpo", "configs/tiny/grpo.yaml", tmp_path / "b", "learner=tinker",
                             "lora.alpha=32", "tinker.base_url=http://127.0.0.1:9")
    assert unreachable.returncode == 2 and "Traceback" not in unreachable.stderr
    assert "cannot reach the Tinker service at http://127.0.0.1:9" in unreachable.stderr
    monkeypatch.delenv("TINKER_API_KEY")
    keyless = run_recipe("grpo", "configs/tiny/grpo.yaml", tmp_path / "b", "learner=tinker", "lora.alpha=32",
                         "tinker.base_url=http://127.0.0.1:9")
    assert keyless.returncode == 2 and "$TINKER_API_KEY" in keyless.stderr


@pytest.mark.slow
def test_eval_samples_a_tinker_checkpoint(service, tmp_path):
    """`mathrl eval --tinker URL`: the base model on the service gives what it gives in process."""
    server, url = service
    argv = [sys.executable, "-m", "mathrl.cli", "eval", "--model", "tiny", "--benchmarks", "arith",
            "--num-problems", "8", "--max-tokens", "64"]
    remote = subprocess.run([*argv, "--tinker", url, "--out", str(tmp_path / "remote")], capture_output=True,
                            text=True, timeout=600)
    assert remote.returncode == 0, remote.stderr
    local = subprocess.run([*argv, "--batch-size", "1", "--out", str(tmp_path / "local")],
                           capture_output=True, text=True, timeout=600)
    assert local.returncode == 0, local.stderr

    def answers(out):
        rows = (out / "eval" / "arith" / "samples.jsonl").read_text().splitlines()
        return [(json.loads(r)["response"], json.loads(r)["n_tokens"]) for r in rows]

    assert answers(tmp_path / "remote") == answers(tmp_path / "local")

    # `mathrl distill --tinker`: the teacher is the service's model.
    traces = tmp_path / "traces.jsonl"
    distill = [sys.executable, "-m", "mathrl.cli", "distill", "--teacher", "tiny", "--tinker", url,
               "--dataset", "arith", "--num-problems", "8", "--max-tokens", "64", "--temperature", "0"]
    distilled = subprocess.run([*distill, "--out", str(traces)], capture_output=True, text=True, timeout=600)
    assert distilled.returncode == 0, distilled.stderr
    kept = [json.loads(line) for line in traces.read_text().splitlines()]
    assert kept and "from tiny" in distilled.stdout  # the base model's correct answers, as traces


def test_seeds_of_a_repeated_prompt_are_those_of_one_request_for_all_its_samples():
    """The service is sent a prompt once with all its samples; in process it may come twice."""
    from mathrl.sampling.hf import row_seeds

    twice = row_seeds(7, [[1, 2], [3], [1, 2]], 4)
    once = row_seeds(7, [[1, 2], [3]], 8)
    assert twice[:4] + twice[8:] == once[:8] and twice[4:8] == once[8:12]
    assert len(set(twice)) == 12
