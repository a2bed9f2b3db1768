"""SFT: the assistant-only mask, exact resume after a real kill, and adapters others can load."""

import copy
import json
import subprocess
import sys

import pytest
import torch
from recipes import kill_after, logged_steps, run_recipe
from safetensors.torch import load_file

from mathrl.errors import UserError
from mathrl.train.local import Plan, accumulate, micro_batches
from mathrl.train.losses import Loss
from mathrl.train.policy import LogprobForward
from mathrl.train.sft import Example, assistant_mask, epoch_batches, sft_datums

CHAT = [
    {"role": "system", "content": "Please reason step by step, and put your final answer within \\boxed{}."},
    {"role": "user", "content": "Compute $2 + 3$."},
    {"role": "assistant", "content": "<think>\n2 + 3 = 5\n</think>\n\nThe answer is $\\boxed{5}$."},
    {"role": "user", "content": "Now double it."},
    {"role": "assistant", "content": "<think>\n5 * 2 = 10\n</think>\n\nThe answer is $\\boxed{10}$."},
]


def _spans(mask):
    spans, start = [], None
    for i, m in enumerate([*mask, False]):
        if m and start is None:
            start = i
        elif not m and start is not None:
            spans.append((start, i))
            start = None
    return spans


def test_mask_covers_every_assistant_turn_with_its_thinking_and_nothing_else(tiny):
    _, tok = tiny
    ids, mask = assistant_mask(tok, CHAT)
    spans = _spans(mask)
    assert [tok.decode(ids[a:b]) for a, b in spans] == [
        CHAT[2]["content"] + "<|im_end|>",
        CHAT[4]["content"] + "<|im_end|>",
    ]
    # A template without {% generation %} markers (Qwen3's own) gets the same mask by prefixes.
    plain = copy.deepcopy(tok)
    plain.chat_template = tok.chat_template.replace("{%- generation %}", "").replace(
        "{%- endgeneration %}", ""
    )
    assert "generation %}" not in plain.chat_template
    assert assistant_mask(plain, CHAT) == (ids, mask)
    # One that drops the thinking of past turns (as Qwen3's does) renders earlier turns
    # differently once a later one exists: refused, not silently mis-masked.
    plain.chat_template = plain.chat_template.replace(
        "{{- message['content'] + '<|im_end|>' }}",
        "{{- (message['content'] if loop.last else message['content'].split('</think>')[-1])"
        " + '<|im_end|>' }}",
    )
    with pytest.raises(UserError, match="earlier turns change"):
        assistant_mask(plain, CHAT)


def test_only_assistant_tokens_get_gradient(tiny):
    model, tok = tiny
    ids, mask = assistant_mask(tok, CHAT)
    datums = sft_datums([Example(tuple(ids), tuple(mask))])
    captured = {}

    def keep_hidden(_module, _inputs, output):  # the final hidden states the LM head reads
        output.last_hidden_state.retain_grad()
        captured["hidden"] = output.last_hidden_state

    handle = model.get_decoder().register_forward_hook(keep_hidden)
    try:
        accumulate(LogprobForward(model), datums, Loss("cross_entropy", entropy=False), Plan(),
                   tok.pad_token_id, torch.device("cpu"))
    finally:
        handle.remove()
        model.zero_grad(set_to_none=True)
    # Position t-1 predicts token t: its state gets gradient exactly when token t is an assistant token.
    grad_per_position = captured["hidden"].grad[0].abs().sum(-1)
    for t in range(1, len(ids)):
        assert (grad_per_position[t - 1] > 0).item() == mask[t], (t, tok.decode([ids[t]]))
    thinking = ids.index(tok.convert_tokens_to_ids("<think>"))
    assert mask[thinking] and grad_per_position[thinking - 1] > 0
    assert grad_per_position[len(ids) - 1] == 0  # the last position predicts nothing


def test_batches_are_a_seeded_permutation_per_epoch():
    batches = epoch_batches(10, 4, seed=0, epoch=0)
    assert [len(b) for b in batches] == [4, 4, 2] and sorted(sum(batches, [])) == list(range(10))
    assert batches == epoch_batches(10, 4, seed=0, epoch=0) != epoch_batches(10, 4, seed=0, epoch=1)
    assert epoch_batches(10, 4, 0, 0, last_batch="drop") == batches[:2]
    assert len(epoch_batches(3825, 32, 0, 0, "drop")) == 119 and len(epoch_batches(94, 8, 0, 0, "drop")) == 11
    examples = [Example((1,) * n, (True,) * n) for n in (5, 2, 9, 3)]
    datums = sft_datums(examples)
    layout = micro_batches(datums, Plan(micro_batch_size=2))
    assert [[len(datums[r[0]].sequence) for r in m] for m in layout] == [[2, 3], [5, 9]]


def _traces(path, n=48):
    from mathrl.prompts import PromptProtocol
    from mathrl.tasks import arith
    from mathrl.traces import Trace

    problems = arith.generate("train", n, seed=5, levels=[1, 2, 3])
    path.write_text(
        "".join(
            Trace(
                tuple(PromptProtocol().messages(p, answer=p.solution)),
                {"problem_id": p.id, "dataset": "arith_train"},
            ).to_json()
            + "\n"
            for p in problems
        )
    )
    return path


def _sft(out, *overrides, wait=True):
    return run_recipe("sft", "configs/tiny/sft.yaml", out, *overrides, wait=wait, timeout=600)


def _steps(run):
    return logged_steps(run, "train/loss")


@pytest.mark.parametrize("finetune", ["lora", "full"])
@pytest.mark.slow
def test_killed_and_resumed_sft_ends_with_the_same_weights(tmp_path, finetune):
    data = _traces(tmp_path / "traces.jsonl")
    settings = [
        f"data={data}",
        f"finetune={finetune}",
        "batch_size=8",
        "micro_batch_size=4",
        "epochs=2",
        "save_every=3",
        "eval.benchmarks=[]",
        "lora.dropout=0.1",
        "keep_checkpoints=1",
    ]
    whole = _sft(tmp_path / "whole", *settings)
    assert whole.returncode == 0, whole.stderr
    assert _steps(tmp_path / "whole") == list(range(1, 13))

    run = tmp_path / "killed"
    process = _sft(run, *settings, wait=False)
    kill_after(process, lambda: _steps(run), 7)
    assert 7 <= max(_steps(run)) < 12, "the kill should land mid-run"
    resumed = _sft(run, *settings)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stdout
    assert _steps(run) == list(range(1, 13))  # nothing lost, nothing doubled
    name = "adapter_model.safetensors" if finetune == "lora" else "model.safetensors"
    a, b = load_file(tmp_path / "whole" / "final" / name), load_file(run / "final" / name)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    losses = [
        json.loads(line)["train/loss"]
        for line in (run / "metrics.jsonl").read_text().splitlines()
        if "train/loss" in line
    ]
    assert losses == [
        json.loads(line)["train/loss"]
        for line in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()
        if "train/loss" in line
    ]
    rerun = _sft(run, *settings, "lr=1e-4")
    assert rerun.returncode == 2 and "other settings (lr: 0.003 -> 0.0001)" in rerun.stderr


@pytest.mark.slow
def test_saved_adapter_loads_in_peft_and_in_mathrl_eval(tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from mathrl.models import TINY_PATH

    data = _traces(tmp_path / "traces.jsonl", n=16)
    out = _sft(
        tmp_path / "run",
        f"data={data}",
        "epochs=1",
        "batch_size=8",
        "eval.benchmarks=[arith]",
        "eval.num_problems=20",
        "eval.max_tokens=64",
    )
    assert out.returncode == 0, out.stderr
    final = tmp_path / "run" / "final"
    base = AutoModelForCausalLM.from_pretrained(TINY_PATH)
    peft_model = PeftModel.from_pretrained(base, str(final))
    trained = load_file(final / "adapter_model.safetensors")
    loaded = {k: v for k, v in peft_model.state_dict().items() if "lora_" in k}
    assert len(trained) == len(loaded) > 0
    assert any(v.abs().sum() > 0 for k, v in loaded.items() if "lora_B" in k)  # B starts at zero
    ev = subprocess.run(
        [
            sys.executable,
            "-m",
            "mathrl.cli",
            "eval",
            "--model",
            "tiny",
            "--adapter",
            str(final),
            "--benchmarks",
            "arith",
            "--num-problems",
            "20",
            "--max-tokens",
            "64",
            "--out",
            str(tmp_path / "ev"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ev.returncode == 0, ev.stderr
    # The same weights, the same protocol: mathrl eval agrees with the SFT run's own final eval.
    own = json.loads((tmp_path / "run" / "eval" / "arith" / "metrics.json").read_text())
    other = json.loads((tmp_path / "ev" / "eval" / "arith" / "metrics.json").read_text())
    assert own["accuracy"] == other["accuracy"] and own["protocol"] == other["protocol"]
    sink = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert sink[-1]["eval/arith/accuracy"] == own["accuracy"]
