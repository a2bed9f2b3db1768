"""Peak memory and time of one GRPO and one SFT micro-batch, before and after the memory work.

    python benchmarks/memory.py                                   # the done-when run (CPU, below)
    python benchmarks/memory.py --shape qwen3-4b --layers 2 --mode grpo --sequences 8 --tokens 2048
    python benchmarks/memory.py --shape qwen3-4b --dtype bf16 --device cuda --mode grpo sft   # a GPU

One micro-batch = forward, loss and backward of ``--sequences`` sequences of ``--prompt-tokens``
prompt and ``--tokens`` completion (GRPO) or target (SFT) tokens, through the project's own
``accumulate_gradients``, with a fresh LoRA adapter (rank ``--lora-rank``, every linear layer).
Each variant runs in a fresh process, so nothing carries over:

- ``full-logits``: the log-probability code as it was before (every position's full-vocabulary
  logits in fp32, a log-softmax for the loss and another for the entropy), kept here as the peer;
- ``chunked``: the LM head, log-softmax and entropy on 512 target rows at a time, recomputed in
  the backward pass;
- ``chunked+ckpt``: the same with activation checkpointing of the decoder layers.

Peak memory is the device's: on CUDA ``torch.cuda.max_memory_allocated`` over the step; on CPU the
process's peak resident set (``VmHWM``, reset through ``/proc/self/clear_refs`` after the model is
built) minus its resident set before the step. On CPU a variant that would not fit runs under an
address-space cap (``--cpu-cap-gb``) and is reported as needing more than the cap, so the machine
is never pushed into swap. ``--layers`` reduces the depth on a CPU; the hidden size and the 151,936-
token vocabulary, which decide the LM head's memory, are the real ones.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import time

import torch
from shapes import SHAPES, build_model

VARIANTS = ("full-logits", "chunked", "chunked+ckpt")


def full_logits_logprobs(model, input_ids_B_T, attention_B_T, temperature=1.0, entropy=True, **_ignored):
    """The code this benchmark measures against: ``token_logprobs_and_entropy`` before chunking."""
    logits_B_T_V = model(input_ids=input_ids_B_T, attention_mask=attention_B_T, use_cache=False).logits
    logits_B_T_V = logits_B_T_V[:, :-1].float()
    if temperature != 1.0:
        logits_B_T_V = logits_B_T_V / temperature
    targets_B_T = input_ids_B_T[:, 1:]
    logprobs = -torch.nn.functional.cross_entropy(logits_B_T_V.transpose(1, 2), targets_B_T, reduction="none")
    logprobs_B_T = torch.cat([logprobs.new_zeros(logprobs.shape[0], 1), logprobs], dim=1)
    if not entropy:
        return logprobs_B_T, None
    with torch.no_grad():
        logp_all = torch.log_softmax(logits_B_T_V.detach(), -1)
        ent = -(logp_all.exp() * logp_all).sum(-1)
    return logprobs_B_T, torch.cat([ent.new_zeros(ent.shape[0], 1), ent], dim=1)


def _rss_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def worker(args) -> dict:
    """One micro-batch of one variant in this process; returns its measurements."""
    from peft import LoraConfig, get_peft_model

    from mathrl.device import choose_dtype
    from mathrl.train.learner import Datum
    from mathrl.train.local import Plan, accumulate
    from mathrl.train.losses import Loss
    from mathrl.train.policy import LogprobForward, set_activation_checkpointing
    from mathrl.train.sft import Example, sft_datums

    device = torch.device(args.device)
    dtype = choose_dtype(device, args.dtype)
    model, tokenizer = build_model(args.shape, device, dtype, args.layers)
    model = get_peft_model(
        model, LoraConfig(r=args.lora_rank, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM")
    )
    model.train()
    variant = args.worker
    set_activation_checkpointing(model, variant == "chunked+ckpt")
    if variant == "full-logits":  # the same loops, with the old log-probability code
        import mathrl.train.policy as policy

        policy.token_logprobs_and_entropy = full_logits_logprobs  # what LogprobForward calls
    vocab = min(model.config.vocab_size, 30_000)
    generator = torch.Generator().manual_seed(0)
    n, prompt, tokens = args.sequences, args.prompt_tokens, args.tokens
    ids = torch.randint(0, vocab, (n, prompt + tokens), generator=generator)
    n_params = sum(p.numel() for p in model.parameters())

    def step():
        if args.mode == "grpo":
            datums = [Datum.from_sequence(row.tolist(), prompt, 1.0, [-1.0] * tokens, (-1.0) ** b)
                      for b, row in enumerate(ids)]
            loss = Loss("importance_sampling")
        else:
            datums = sft_datums([Example(tuple(row.tolist()), tuple([False] * prompt + [True] * tokens))
                                 for row in ids])
            loss = Loss("cross_entropy", entropy=False)
        accumulate(LogprobForward(model), datums, loss, Plan(micro_batch_size=n), tokenizer.pad_token_id,
                   device)

    if device.type == "cuda":
        step()  # warm-up: kernels and allocator
        model.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current resident set
        before = _rss_bytes("VmRSS")
    start = time.perf_counter()
    try:
        step()
    except (RuntimeError, torch.OutOfMemoryError) as err:
        # Out of memory: while the exception (and its traceback, which keeps every frame's tensors
        # alive) is held, what is resident is what was in use when the allocation failed. That
        # plus the failed request is a measured lower bound on what the step needs.
        asked = re.search(r"allocate (\d+) bytes", str(err))
        if asked is None or device.type == "cuda":
            raise
        in_use = _rss_bytes("VmRSS") - before
        return {"variant": variant, "needs_at_least_bytes": in_use + int(asked[1]),
                "in_use_bytes": in_use, "failed_request_bytes": int(asked[1])}
    if device.type == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - before
    else:
        peak = _rss_bytes("VmHWM") - before
    seconds = time.perf_counter() - start
    return {
        "variant": variant,
        "peak_bytes": peak,
        "seconds": seconds,
        "tokens": n * (prompt + tokens),
        "params": n_params,
        "device": str(device),
        "dtype": str(dtype).removeprefix("torch."),
    }


def run_variant(args, mode: str, variant: str) -> dict:
    command = [
        sys.executable,
        __file__,
        "--worker",
        variant,
        "--mode",
        mode,
        "--shape",
        args.shape,
        "--sequences",
        str(args.sequences),
        "--tokens",
        str(args.tokens),
        "--prompt-tokens",
        str(args.prompt_tokens),
        "--lora-rank",
        str(args.lora_rank),
        "--device",
        args.device,
        "--dtype",
        args.dtype,
    ]
    if args.layers is not None:
        command += ["--layers", str(args.layers)]
    env = dict(os.environ)
    if args.device == "cpu" and variant == "full-logits":
        env["MATHRL_BENCH_CAP_BYTES"] = str(int(args.cpu_cap_gb * 2**30))
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["?"])[-1]
        too_big = "memory" in done.stderr.lower() or "alloc" in done.stderr.lower()
        return {"variant": variant, "error": tail, "over_cap": too_big and variant == "full-logits"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def mfu(result: dict, peak_tflops: float) -> float | None:
    """Model FLOPs utilisation, the usual 6 x parameters per trained token (LoRA trains less,
    so this overstates the work done; it is the figure papers quote)."""
    if not result.get("seconds") or result["device"] == "cpu":
        return None
    return 6 * result["params"] * result["tokens"] / result["seconds"] / (peak_tflops * 1e12)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=SHAPES, default="qwen3-4b")
    parser.add_argument(
        "--layers",
        type=int,
        default=None,
        help="decoder layers (default: the shape's; the done-when CPU run uses 2)",
    )
    parser.add_argument("--mode", nargs="+", choices=("grpo", "sft"), default=["grpo", "sft"])
    parser.add_argument("--sequences", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=2048, help="completion (GRPO) or target (SFT) tokens")
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--lora-rank", type=int, default=64)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="auto", help="auto: bf16 on GPUs, fp32 on CPU")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument(
        "--cpu-cap-gb",
        type=float,
        default=16.0,
        help="address-space cap for the full-logits variant on CPU (it may not fit)",
    )
    parser.add_argument(
        "--peak-tflops", type=float, default=989.0, help="the GPU's dense bf16 peak (H100 SXM)"
    )
    parser.add_argument("--worker", choices=VARIANTS, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        cap = os.environ.get("MATHRL_BENCH_CAP_BYTES")
        if cap:
            resource.setrlimit(resource.RLIMIT_AS, (int(cap), int(cap)))
        args.mode = args.mode[0]
        print(json.dumps(worker(args)))
        return 0
    depth = f"{args.layers} layers" if args.layers else "all layers"
    print(
        f"{args.shape} ({depth}, vocabulary 151,936), LoRA rank {args.lora_rank}, {args.device}, "
        f"dtype {args.dtype}; {args.sequences} sequences x "
        f"({args.prompt_tokens} prompt + {args.tokens} tokens)"
    )
    for mode in args.mode:
        results = [run_variant(args, mode, v) for v in args.variants]
        print(f"\n{mode} micro-batch:")
        print(
            f"  {'variant':<14} {'peak memory':>14} {'seconds':>9} {'tokens/s':>10} {'MFU':>6}"
            "  vs full-logits"
        )
        base = next((r for r in results if r["variant"] == "full-logits"), None)
        for r in results:
            if "needs_at_least_bytes" in r:
                bound = "> " + format(r["needs_at_least_bytes"] / 2**30, ".2f")
                print(f"  {r['variant']:<14} {bound:>10} GiB  "
                      f"(out of memory under the {args.cpu_cap_gb:.0f} GiB cap: "
                      f"{r['in_use_bytes'] / 2**30:.2f} GiB in use when "
                      f"{r['failed_request_bytes'] / 2**30:.2f} GiB more could not be had)")
                continue
            if "error" in r:
                cap = f"> {args.cpu_cap_gb:.0f} GiB" if r["over_cap"] else "failed"
                print(f"  {r['variant']:<14} {cap:>14}  ({r['error'][:90]})")
                continue
            gib = r["peak_bytes"] / 2**30
            m = mfu(r, args.peak_tflops)
            ratio = ""
            if base is not None and r is not base:
                if "needs_at_least_bytes" in base:
                    ratio = f"peak memory < 1/{base['needs_at_least_bytes'] / r['peak_bytes']:.1f} of it"
                elif "error" in base and base["over_cap"]:
                    ratio = f"peak memory < 1/{args.cpu_cap_gb / gib:.1f} of it"
                elif "error" not in base:
                    ratio = f"peak memory 1/{base['peak_bytes'] / r['peak_bytes']:.1f}"
            print(
                f"  {r['variant']:<14} {gib:>10.2f} GiB {r['seconds']:>9.1f} "
                f"{r['tokens'] / r['seconds']:>10.0f} "
                f"{'' if m is None else f'{100 * m:.1f}%':>6}  {ratio}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
