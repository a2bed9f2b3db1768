"""The first GPU measurements, as one prepared command: random-weight Qwen3-4B and Qwen3-8B
shapes in bf16 with each study recipe's LoRA settings, no hub, in under 8 minutes.

    PYTHONPATH=src python benchmarks/gpu.py --out $OUT          # on a GPU machine (make gpu-check)
    PYTHONPATH=src python benchmarks/gpu.py --smoke --out DIR   # tiny shapes on the CPU, under a minute

Sections, in order of value, each with its own time budget; one that fails (or runs out of
time) records why and the rest go on; ``results.json`` and ``results.md`` in ``--out`` are
rewritten after every section, so a run cut short still leaves what it measured:

1. ``memory``: peak memory (``torch.cuda.max_memory_allocated``) of one GRPO and one SFT
   micro-batch at the recipes' ``micro_batch_tokens``, with and without activation
   checkpointing; then the largest token budget that fits in 80 GB and in the whole card
   (binary search, bounded in time).
2. ``throughput``: trainer tokens/s and MFU for LoRA and full fine-tuning, MFU = FLOPs / time /
   the card's dense bf16 peak, FLOPs per token = 2N (forward) + 2N (backward through every
   weight) + 2N_trainable (the trained weights' gradients) + attention (12 x layers x hidden x
   context, forward and backward), N the parameters a token passes through (no embedding).
3. ``sampler``: the in-process sampler's decode tokens/s for a GRPO-shaped batch, against the
   HBM roofline of that shape (every decode step reads the weights once and each row's KV cache).
4. ``publish``: saving an adapter and loading it in place into the engine ``mathrl serve`` runs.
5. ``fsdp``: one FSDP2 step with world size 1 under NCCL (the code path, not the scaling).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch

# Qwen3's published configs (hub config.json), without the hub.
QWEN3 = {
    "qwen3-4b": dict(hidden_size=2560, intermediate_size=9728, num_hidden_layers=36, num_attention_heads=32,
                     num_key_value_heads=8, head_dim=128, vocab_size=151936, tie_word_embeddings=True),
    "qwen3-8b": dict(hidden_size=4096, intermediate_size=12288, num_hidden_layers=36, num_attention_heads=32,
                     num_key_value_heads=8, head_dim=128, vocab_size=151936, tie_word_embeddings=False),
    "smoke": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=16, vocab_size=512, tie_word_embeddings=True),
}
# Dense bf16 peak TFLOP/s and HBM bandwidth TB/s by card name (the spec sheets, SXM parts).
CARDS = {"H200": (989.0, 4.8), "H100": (989.0, 3.35), "A100": (312.0, 2.0), "L40S": (362.0, 0.864)}
DEFAULT_CARD = (989.0, 3.35)  # unknown cards: H100's numbers, said so in the table


@dataclass(frozen=True)
class Recipe:
    """A study recipe's shape: its model, its LoRA, and its micro-batches (configs/study*/)."""

    name: str
    shape: str
    rank: int
    grpo_tokens: int  # micro_batch_tokens
    grpo_length: int  # prompt + max_tokens of a rollout
    sft_length: int  # max_length of a trace


RECIPES = [Recipe("study 1 (Qwen3-4B, LoRA 64)", "qwen3-4b", 64, 32768, 512 + 2048, 4096),
           Recipe("study 2 (Qwen3-8B, LoRA 128)", "qwen3-8b", 128, 32768, 256 + 2048, 2048)]
SMOKE = [Recipe("smoke (tiny shapes)", "smoke", 8, 512, 64, 96)]


class Budget:
    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()


class Report:
    """The results, rewritten (atomically) after every section."""

    def __init__(self, out: Path, meta: dict):
        self.out, self.data = out, {"meta": meta, "sections": {}}
        out.mkdir(parents=True, exist_ok=True)

    def section(self, name: str, value) -> None:
        self.data["sections"][name] = value
        self.write()

    def write(self) -> None:
        for filename, text in (("results.json", json.dumps(self.data, indent=2) + "\n"),
                               ("results.md", markdown(self.data))):
            tmp = self.out / (filename + ".tmp")
            tmp.write_text(text)
            tmp.replace(self.out / filename)


def markdown(data: dict) -> str:
    meta, lines = data["meta"], []
    lines.append(f"# mathrl on {meta['device']} ({meta['mode']})\n")
    lines.append(f"torch {meta['torch']}, transformers {meta['transformers']}, peft {meta['peft']}; "
                 f"peak {meta['peak_tflops']} TFLOP/s bf16, {meta['hbm_tbps']} TB/s"
                 f"{meta.get('card_note', '')}\n")
    for name, section in data["sections"].items():
        lines.append(f"\n## {name} ({section.get('seconds', 0):.0f} s)\n")
        if "error" in section:
            lines.append(f"failed: `{section['error']}`\n")
        rows = section.get("rows", [])
        if rows:
            header = list(rows[0])
            lines.append("| " + " | ".join(header) + " |")
            lines.append("|" + "---|" * len(header))
            for row in rows:
                lines.append("| " + " | ".join(_cell(row.get(k)) for k in header) + " |")
        for note in section.get("notes", []):
            lines.append(f"\n{note}")
    return "\n".join(lines) + "\n"


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def build_model(shape: str, device: torch.device, dtype: torch.dtype, layers: int | None = None):
    """A random-weight Qwen3 of ``shape`` on ``device`` (built there directly: no host copy)."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    config = Qwen3Config(**{**QWEN3[shape], **({"num_hidden_layers": layers} if layers else {})},
                         max_position_embeddings=40960, rope_theta=1_000_000.0, rms_norm_eps=1e-6)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # initialised in bf16 where it lives: no fp32 copy of 8B weights
    try:
        with torch.device(device):
            model = Qwen3ForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    return model.train()


def lora(model, rank: int):
    from peft import LoraConfig, get_peft_model

    return get_peft_model(model, LoraConfig(r=rank, lora_alpha=32, target_modules="all-linear",
                                            task_type="CAUSAL_LM")).train()


def datums(n: int, length: int, prompt: int, vocab: int, rl: bool, seed: int = 0):
    from mathrl.train.learner import Datum

    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        tokens = torch.randint(0, vocab, (length,), generator=g).tolist()
        covered = length - prompt
        out.append(Datum.from_sequence(tokens, prompt, 1.0, [-1.0] * covered if rl else None,
                                       1.0 if rl else None))
    return out


def fb(model, data, rl: bool, device: torch.device, budget_tokens: int):
    """One forward_backward of ``data`` as one micro-batch (the learner's code path)."""
    from mathrl.train.local import Plan, accumulate
    from mathrl.train.losses import Loss
    from mathrl.train.policy import LogprobForward

    loss = Loss("importance_sampling") if rl else Loss("cross_entropy", entropy=False)
    return accumulate(LogprobForward(model), data, loss, Plan(micro_batch_size=len(data),
                                                              micro_batch_tokens=budget_tokens), 0, device)


def fb_peak(model, data, rl: bool, device: torch.device, budget_tokens: int) -> float | None:
    """The peak allocated memory (GiB; None on a CPU) of one :func:`fb`, gradients cleared after."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    try:
        fb(model, data, rl, device, budget_tokens)
        if device.type != "cuda":
            return None
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() / 2**30
    finally:
        model.zero_grad(set_to_none=True)


def section_memory(recipes, device, dtype, budget: Budget, smoke: bool) -> dict:
    from mathrl.train.policy import set_activation_checkpointing

    rows, notes = [], []
    for r in recipes:
        model = lora(build_model(r.shape, device, dtype), r.rank)
        vocab = QWEN3[r.shape]["vocab_size"]
        for kind, length, prompt in (("GRPO", r.grpo_length, r.grpo_length // 4), ("SFT", r.sft_length, 16)):
            n = max(1, r.grpo_tokens // length)
            data = datums(n, length, prompt, vocab, kind == "GRPO")
            for checkpointing in (False, True):
                if budget.left() < 0:
                    notes.append(f"{r.name} {kind}: out of time")
                    break
                set_activation_checkpointing(model, checkpointing)
                try:
                    peak = fb_peak(model, data, kind == "GRPO", device, r.grpo_tokens)
                except torch.OutOfMemoryError:
                    peak = "out of memory"
                rows.append({"recipe": r.name, "step": kind, "micro-batch": f"{n} x {length}",
                             "checkpointing": checkpointing, "peak GiB": peak})
        if device.type == "cuda":
            set_activation_checkpointing(model, True)
            card = torch.cuda.get_device_properties(device).total_memory
            for cap_name, cap in (("80 GB", 80e9), ("the card", card)):
                best = largest_budget(model, r, device, cap, budget)
                rows.append({"recipe": r.name, "step": "GRPO", "micro-batch": f"largest that fits {cap_name}",
                             "checkpointing": True, "peak GiB": best})
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return {"rows": rows, "notes": notes}


def largest_budget(model, r: Recipe, device, cap_bytes: float, budget: Budget) -> str:
    """Binary search (in whole rollouts of the recipe's length) for the most tokens one GRPO
    micro-batch can hold under ``cap_bytes``; stops when the section's time runs out."""
    vocab = QWEN3[r.shape]["vocab_size"]
    lo, hi = 0, 256  # rollouts
    while lo < hi and budget.left() > 30:
        mid = (lo + hi + 1) // 2
        data = datums(mid, r.grpo_length, r.grpo_length // 4, vocab, True)
        try:
            ok = fb_peak(model, data, True, device, mid * r.grpo_length) * 2**30 <= cap_bytes
        except torch.OutOfMemoryError:
            ok = False
        torch.cuda.empty_cache()
        lo, hi = (mid, hi) if ok else (lo, mid - 1)
    exact = "" if lo == hi else f" (search stopped by the time budget below {hi} rollouts)"
    return f"{lo * r.grpo_length:,} tokens ({lo} x {r.grpo_length}){exact}"


def flops_per_token(model, trainable: int, context: int) -> float:
    config = model.config
    embedding = config.vocab_size * config.hidden_size
    # Parameters a token's matmuls pass through: all but the input embedding (a lookup), which a
    # tied model's head reuses (counted once, as the head).
    n = sum(p.numel() for p in model.parameters()) - (0 if config.tie_word_embeddings else embedding)
    attention = 12 * config.num_hidden_layers * config.num_attention_heads * config.head_dim * context
    return 4 * n + 2 * min(trainable, n) + attention


def section_throughput(recipes, device, dtype, budget: Budget, peak_tflops: float, smoke: bool) -> dict:
    from mathrl.train.policy import set_activation_checkpointing

    rows = []
    for r in recipes:
        for finetune in ("lora", "full"):
            if budget.left() < 0:
                break
            base = build_model(r.shape, device, dtype, layers=None if finetune == "lora" or smoke else 12)
            model = lora(base, r.rank) if finetune == "lora" else base
            set_activation_checkpointing(model, True)
            trainable = [p for p in model.parameters() if p.requires_grad]
            optimizer = torch.optim.AdamW(trainable, lr=1e-5)
            vocab = QWEN3[r.shape]["vocab_size"]
            n = max(1, r.grpo_tokens // r.grpo_length)
            data = datums(n, r.grpo_length, r.grpo_length // 4, vocab, True)
            times = []
            try:
                for _ in range(4):
                    if budget.left() < 0 and len(times) >= 2:
                        break
                    start = _sync_time(device)
                    fb(model, data, True, device, r.grpo_tokens)
                    torch.nn.utils.clip_grad_norm_(trainable, float("inf"))
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                    times.append(_sync_time(device) - start)
                seconds = min(times[1:] or times)
                tokens = n * r.grpo_length
                flops = flops_per_token(model.get_base_model() if finetune == "lora" else model,
                                        sum(p.numel() for p in trainable), r.grpo_length) * tokens
                rows.append({"recipe": r.name, "fine-tuning": finetune + ("" if finetune == "lora" or smoke
                                                                            else " (12 of 36 layers)"),
                             "tokens/step": tokens, "s/step": seconds, "tokens/s": tokens / seconds,
                             "MFU %": 100 * flops / seconds / (peak_tflops * 1e12)})
            except torch.OutOfMemoryError as err:
                rows.append({"recipe": r.name, "fine-tuning": finetune, "tokens/step": n * r.grpo_length,
                             "s/step": None, "tokens/s": f"out of memory: {str(err)[:60]}", "MFU %": None})
            del model, base, optimizer
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return {"rows": rows, "notes": ["GRPO micro-batches at the recipe's micro_batch_tokens, activation "
                                    "checkpointing "
                                    "on, AdamW; the fastest of the steps after the first."]}


def _sync_time(device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter()


def section_sampler(recipes, device, dtype, budget: Budget, hbm_tbps: float, smoke: bool) -> dict:
    from mathrl.sampling import SamplingParams
    from mathrl.sampling.hf import HFSampler

    rows = []
    for r in recipes:
        if budget.left() < 0:
            break
        model = build_model(r.shape, device, dtype).eval()
        tokenizer = _tokenizer(QWEN3[r.shape]["vocab_size"])
        prompts_n, samples, prompt_len, new = (4, 4, 32, 16) if smoke else (16, 16, 512, 256)
        g = torch.Generator().manual_seed(0)
        prompts = [torch.randint(10, QWEN3[r.shape]["vocab_size"], (prompt_len,), generator=g).tolist()
                   for _ in range(prompts_n)]
        sampler = HFSampler(model, tokenizer, batch_size=prompts_n * samples)
        params = SamplingParams(temperature=1.0, max_tokens=new, seed=0, ignore_eos=True)
        sampler.sample(prompts[:1], 1, SamplingParams(temperature=1.0, max_tokens=4, seed=0, ignore_eos=True))
        start = _sync_time(device)
        sampler.sample(prompts, samples, params)
        seconds = _sync_time(device) - start
        rows_n = prompts_n * samples
        weights = sum(p.numel() * p.element_size() for p in model.parameters())
        config = model.config
        kv_per_token = 2 * config.num_hidden_layers * config.num_key_value_heads * config.head_dim * 2  # bf16
        mean_context = prompt_len + new / 2
        step_bytes = weights + rows_n * mean_context * kv_per_token
        roofline = rows_n / (step_bytes / (hbm_tbps * 1e12))
        rows.append({"recipe": r.name, "batch": f"{prompts_n} prompts x {samples} samples",
                     "prompt + new tokens": f"{prompt_len} + {new}", "tokens/s": rows_n * new / seconds,
                     "HBM roofline tokens/s": roofline,
                     "% of roofline": 100 * rows_n * new / seconds / roofline})
        del model, sampler
        if device.type == "cuda":
            torch.cuda.empty_cache()
    note = ("Decode tokens/s including the prefill; the roofline reads the weights and each row's KV cache "
            "(bf16, at the mean context) once per decode step.")
    return {"rows": rows, "notes": [note]}


def _tokenizer(vocab: int):
    """A stand-in tokenizer for random weights: ids are all the sampler needs (pad, eos, decode)."""

    class Ids:
        pad_token_id, eos_token_id = 0, 1
        padding_side = "left"

        def decode(self, ids, skip_special_tokens=True):
            return " ".join(map(str, ids))

        def convert_tokens_to_ids(self, token):
            return None

        def get_vocab(self):
            return {}

    return Ids()


def section_publish(recipes, device, dtype, budget: Budget) -> dict:
    from mathrl.sampling.hf import HFSampler
    from mathrl.serve import Policies
    from mathrl.train.local import publish

    rows = []
    for r in recipes:
        if budget.left() < 0:
            break
        policy = lora(build_model(r.shape, device, dtype), r.rank)
        engine = Policies(HFSampler(build_model(r.shape, device, dtype).eval(), _tokenizer(0)), "base",
                          enable_lora=True)
        with tempfile.TemporaryDirectory() as tmp:
            times = []
            for step in range(3):
                start = _sync_time(device)
                ref = publish(policy, Path(tmp), step)
                saved = _sync_time(device)
                engine.load("policy", str(ref.path), inplace=True)
                times.append((saved - start, _sync_time(device) - saved))
            size = sum(f.stat().st_size for f in ref.path.iterdir()) / 2**20
        save, load = min(t[0] for t in times[1:]), min(t[1] for t in times[1:])
        rows.append({"recipe": r.name, "adapter MiB": size, "save s": save, "load in place s": load,
                     "publish s": save + load})
        del policy, engine
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return {"rows": rows, "notes": ["The second and later publishes (the first loads the adapter's "
                                    "modules)."]}


def section_fsdp(device, dtype, smoke: bool) -> dict:
    import torch.distributed as dist

    from mathrl.distributed import Dist, wrap_policy
    from mathrl.train.local import Plan, accumulate
    from mathrl.train.losses import Loss
    from mathrl.train.policy import LogprobForward

    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(29500 + os.getpid() % 1000))
    backend = "nccl" if device.type == "cuda" else "gloo"
    extra = {"device_id": device} if backend == "nccl" else {}
    dist.init_process_group(backend, rank=0, world_size=1, **extra)
    try:
        shape = "smoke" if smoke else "qwen3-4b"
        model = build_model(shape, device, dtype, layers=None if smoke else 4)
        # wrap_policy wraps only for several processes; FSDP2's code path is the same with one.
        forward = wrap_policy(LogprobForward(model), "full", Dist(0, 2, 0, device))
        vocab = QWEN3[shape]["vocab_size"]
        data = datums(4, 64 if smoke else 1024, 16, vocab, True)
        start = _sync_time(device)
        out = accumulate(forward, data, Loss("importance_sampling"), Plan(micro_batch_size=4), 0, device)
        seconds = _sync_time(device) - start
        layers = "all" if smoke else 4
        return {"rows": [{"backend": backend, "model": f"{shape} ({layers} layers), full, FSDP2",
                          "loss": out.metrics["train/loss"], "s": seconds}]}
    finally:
        dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--smoke", action="store_true",
                        help="tiny shapes on the CPU (or GPU), under a minute")
    parser.add_argument("--minutes", type=float, default=8.0, help="the whole run's budget")
    args = parser.parse_args()
    start = time.monotonic()
    cuda = torch.cuda.is_available() and not (args.smoke and os.environ.get("MATHRL_SMOKE_CPU"))
    device = torch.device("cuda" if cuda else "cpu")
    dtype = torch.bfloat16 if cuda else torch.float32
    name = torch.cuda.get_device_name(device) if cuda else "CPU"
    card = next((v for k, v in CARDS.items() if k in name), None)
    peak, hbm = card or DEFAULT_CARD
    import peft
    import transformers

    meta = {"device": name, "mode": "smoke" if args.smoke else "full", "torch": torch.__version__,
            "transformers": transformers.__version__, "peft": peft.__version__, "peak_tflops": peak,
            "hbm_tbps": hbm, **({} if card else {"card_note": " (not a known card: H100's numbers)"})}
    report = Report(args.out, meta)
    recipes = SMOKE if args.smoke else RECIPES
    total = args.minutes * 60
    shares = {"memory": 0.35, "throughput": 0.25, "sampler": 0.2, "publish": 0.1, "fsdp": 0.1}
    sections = {
        "memory": lambda b: section_memory(recipes, device, dtype, b, args.smoke),
        "throughput": lambda b: section_throughput(recipes, device, dtype, b, peak, args.smoke),
        "sampler": lambda b: section_sampler(recipes, device, dtype, b, hbm, args.smoke),
        "publish": lambda b: section_publish(recipes, device, dtype, b),
        "fsdp": lambda b: section_fsdp(device, dtype, args.smoke),
    }
    failed = 0
    for key, run in sections.items():
        left = total - (time.monotonic() - start)
        t0 = time.monotonic()
        print(f"[{time.monotonic() - start:5.0f} s] {key} ...", flush=True)
        try:
            result = run(Budget(min(shares[key] * total, left)))
        except Exception as err:  # noqa: BLE001 - recorded, and the next section runs
            failed += 1
            traceback.print_exc()
            result = {"error": f"{type(err).__name__}: {err}"[:300]}
        result["seconds"] = time.monotonic() - t0
        report.section(key, result)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    print((args.out / "results.md").read_text())
    print(f"done in {time.monotonic() - start:.0f} s; {failed} section(s) failed; "
          f"{args.out}/results.{{md,json}}")
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
