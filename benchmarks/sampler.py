"""Decode speed: mathrl's in-process sampler vs plain ``model.generate`` (the peer), one run.

    python benchmarks/sampler.py                       # the tiny model on CPU, batch 64
    python benchmarks/sampler.py --shape qwen3-4b --dtype bf16 --batch 64 256 --new-tokens 512

Both decode the same prompts to exactly ``--new-tokens`` tokens (end-of-sequence ignored), at
the same batch size, greedy and sampled; the best of ``--repeats`` runs is reported as
generated tokens per second, with the ratio mathrl / generate. ``--shape qwen3-4b`` builds a
Qwen3-4B-shaped model with random weights (no download), for GPU measurements; there it also
prints the memory-bandwidth roofline (weight bytes read per decode step over the measured
device bandwidth).
"""

from __future__ import annotations

import argparse
import time

import torch
from shapes import SHAPES, build_model

from mathrl.device import choose_device, choose_dtype
from mathrl.prompts import PromptProtocol
from mathrl.sampling import SamplingParams
from mathrl.sampling.hf import HFSampler
from mathrl.tasks import arith


def time_it(fn, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def bench(model, tokenizer, batch: int, new_tokens: int, temperature: float, repeats: int, device) -> dict:
    problems = arith.generate("test", batch, seed=0)
    sampler = HFSampler(model, tokenizer, batch_size=batch)
    params = SamplingParams(temperature=temperature, max_tokens=new_tokens, seed=0, ignore_eos=True)
    prompts = [sampler.encode(PromptProtocol().messages(p), params) for p in problems]
    width = max(map(len, prompts))
    pad = tokenizer.pad_token_id
    input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=device)
    attention = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
    sample_kwargs = (dict(do_sample=False) if params.greedy
                     else dict(do_sample=True, temperature=temperature, top_p=1.0, top_k=0))

    def ours():
        out = sampler.sample(prompts, 1, params)
        assert all(g[0].n_tokens == new_tokens for g in out)

    def peer():
        with torch.inference_mode():
            out = model.generate(input_ids=input_ids, attention_mask=attention, max_new_tokens=new_tokens,
                                 min_new_tokens=new_tokens, pad_token_id=pad, **sample_kwargs)
        assert out.shape[1] - width == new_tokens

    ours(), peer()  # warm-up
    # Interleaved repeats, best of each: drift in machine load hits both sides alike.
    times = {"mathrl": [], "generate": []}
    for _ in range(repeats):
        times["mathrl"].append(time_it(ours, device))
        times["generate"].append(time_it(peer, device))
    return {name: batch * new_tokens / min(ts) for name, ts in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=SHAPES, default="tiny")
    parser.add_argument("--batch", type=int, nargs="+", default=[64])
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    args = parser.parse_args()
    device = choose_device(args.device)
    dtype = choose_dtype(device, args.dtype)
    model, tokenizer = build_model(args.shape, device, dtype)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{args.shape}: {n_params:,} parameters, {dtype}, {device}; "
          f"{args.new_tokens} new tokens per sequence")
    print(f"{'batch':>5} {'sampling':>9} {'mathrl tok/s':>13} {'generate tok/s':>15} {'ratio':>6}")
    for batch in args.batch:
        for temperature in (0.0, 1.0):
            r = bench(model, tokenizer, batch, args.new_tokens, temperature, args.repeats, device)
            mode = "greedy" if temperature == 0 else "T=1"
            print(f"{batch:>5} {mode:>9} {r['mathrl']:>13,.0f} {r['generate']:>15,.0f} "
                  f"{r['mathrl'] / r['generate']:>5.2f}x")
            if device.type == "cuda":
                weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
                bandwidth = _measured_bandwidth(device)
                roofline = batch * bandwidth / weight_bytes  # tokens/s if each step reads the weights once
                print(f"      roofline {roofline:,.0f} tok/s ({bandwidth / 1e12:.2f} TB/s measured): "
                      f"mathrl at {r['mathrl'] / roofline:.0%}")


def _measured_bandwidth(device: torch.device) -> float:
    """Device memory bandwidth in bytes/s from a large on-device copy."""
    x = torch.empty(2**30, dtype=torch.uint8, device=device)
    y = torch.empty_like(x)
    y.copy_(x)
    seconds = min(time_it(lambda: y.copy_(x), device) for _ in range(5))
    return 2 * x.numel() / seconds  # read + write


if __name__ == "__main__":
    main()
