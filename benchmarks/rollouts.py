"""Rollout speed: in-process sampling vs an inference engine behind the rollout seam, one run.

    python benchmarks/rollouts.py                          # tiny; the engine is `mathrl serve`
    python benchmarks/rollouts.py --engine-url http://127.0.0.1:8000/v1 --engine-model tiny

Every variant samples the same token-id prompts (arith problems, the tiny tokenizer) ``--n``
times each to exactly ``--max-tokens`` tokens (end-of-sequence ignored), at temperature 1, the
way GRPO samples a step, and reports generated tokens per second (best of ``--repeats``):

- ``in-process``: ``InProcessRollouts``, the trained module itself (GRPO's default);
- ``engine``: ``ServerRollouts`` against ``mathrl serve --enable-lora`` started here on loopback
  (or the server at ``--engine-url``: vLLM started with ``--enable-lora``), base model;
- ``engine + adapter``: the same after publishing a LoRA adapter (rank ``--lora-rank``, every
  linear layer) and loading it in place, as GRPO does each step; the load is timed too.

Ratios are against in-process. On a GPU with vLLM as the engine this is the number the rollout
seam exists for; on 2 CPU cores with ``mathrl serve`` it measures the seam's own overhead.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from mathrl.models import load_model, load_tokenizer
from mathrl.prompts import PromptProtocol
from mathrl.sampling import SamplingParams, encode_prompt
from mathrl.tasks import arith
from mathrl.train.local import ModuleSampler, publish
from mathrl.train.rollouts import RolloutSettings, ServerRollouts, ServerSettings


def start_serve(model: str) -> tuple[subprocess.Popen, str]:
    command = [sys.executable, "-m", "mathrl.cli", "serve", "--model", model, "--enable-lora", "--port", "0",
               "--batch-size", "256"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    match = re.search(r"(http://127\.0\.0\.1:\d+/v1)", process.stdout.readline())
    if not match:
        process.kill()
        raise SystemExit("mathrl serve did not start")
    return process, match[1]


def tokens_per_s(engine, prompts, n: int, params: SamplingParams, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        groups = engine.sample(prompts, n, params)
        best = min(best, time.perf_counter() - start)
        assert all(c.n_tokens == params.max_tokens for g in groups for c in g)
    return len(prompts) * n * params.max_tokens / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny", help="'tiny' or a model folder (the engine serves it too)")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--n", type=int, default=8, help="samples per prompt (GRPO's group size)")
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--lora-rank", type=int, default=32)
    parser.add_argument("--engine-url", default=None, help="a running engine instead of mathrl serve")
    parser.add_argument("--engine-model", default=None, help="its name for the base model (default --model)")
    args = parser.parse_args()

    tokenizer = load_tokenizer(args.model)
    model = load_model(args.model, torch.device("cpu"), torch.float32)
    params = SamplingParams(temperature=1.0, max_tokens=args.max_tokens, seed=0, ignore_eos=True)
    prompts = [encode_prompt(tokenizer, PromptProtocol().messages(p))
               for p in arith.generate("test", args.prompts, seed=0)]
    server, url = (None, args.engine_url) if args.engine_url else start_serve(args.model)
    rows = []
    try:
        local = ModuleSampler(model, tokenizer, batch_size=args.prompts * args.n)
        rows.append(("in-process", tokens_per_s(local, prompts, args.n, params, args.repeats), None))
        settings = RolloutSettings(engine="server", server=ServerSettings(urls=(url,)))
        engine = ServerRollouts(settings, settings.server.urls, args.engine_model or args.model)
        rows.append(("engine", tokens_per_s(engine, prompts, args.n, params, args.repeats), None))

        from peft import LoraConfig, get_peft_model

        policy = get_peft_model(model, LoraConfig(r=args.lora_rank, lora_alpha=2 * args.lora_rank,
                                                  target_modules="all-linear", init_lora_weights=False))
        with tempfile.TemporaryDirectory() as folder:
            start = time.perf_counter()
            ref = publish(policy, Path(folder), 1)
            saved = time.perf_counter() - start
            engine.load(ref)
            loaded = time.perf_counter() - start - saved
            rows.append(("engine + adapter", tokens_per_s(engine, prompts, args.n, params, args.repeats),
                         f"publish: save {saved * 1000:.0f} ms, load on the engine {loaded * 1000:.0f} ms"))
    finally:
        if server is not None:
            server.kill()
            server.wait()
    print(f"{args.model}: {args.prompts} prompts x {args.n} samples x {args.max_tokens} tokens, "
          f"temperature 1, engine {'at ' + url if args.engine_url else 'mathrl serve (loopback)'}")
    print(f"{'variant':<18} {'tokens/s':>10} {'vs in-process':>14}")
    for name, speed, note in rows:
        print(f"{name:<18} {speed:>10,.0f} {speed / rows[0][1]:>13.2f}x" + (f"   {note}" if note else ""))


if __name__ == "__main__":
    main()
