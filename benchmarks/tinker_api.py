"""One GRPO step through the Tinker API (the real SDK against ``mathrl serve --tinker`` on
loopback) against the same step in process, on the embedded tiny model, as a ratio of seconds.

A step: sample ``--groups`` arith problems x ``--group-size`` (one request of n samples per
problem, all in flight at once), grade with mathrl's grader, advantages = reward - group mean,
one ``forward_backward`` (importance sampling, summed over tokens, as Tinker's) and one
``optim_step``, then publish the weights for the next step's sampling. In process, the same
with mathrl's local learner and its in-process sampler (LoRA of the same shape: alpha 32 on the
attention, MLP and unembedding layers). Each side runs ``--steps`` steps; the median step after
the first is compared:

    python benchmarks/tinker_api.py
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def problems(n: int):
    from mathrl.models import load_tokenizer
    from mathrl.prompts import PromptProtocol
    from mathrl.sampling import encode_prompt
    from mathrl.tasks import arith

    tokenizer = load_tokenizer("tiny")
    chosen = arith.generate("train", n, seed=0, levels=[1, 2, 3])
    return chosen, [encode_prompt(tokenizer, PromptProtocol().messages(p)) for p in chosen]


def advantages(problem, texts, grader):
    from mathrl.train.rl import group_advantages

    return group_advantages([float(g.correct) for g in grader.grade(problem, texts)])


def in_process(args, work: Path) -> list[float]:
    from mathrl.grading import Grader
    from mathrl.models import load_tokenizer
    from mathrl.sampling import SamplingParams
    from mathrl.tinker.server import lora_settings
    from mathrl.train.learner import AdamParams, Datum
    from mathrl.train.local import LocalLearner, Plan
    from mathrl.train.losses import Loss

    chosen, prompts = problems(args.groups)
    learner = LocalLearner("tiny", load_tokenizer("tiny"), work, lora=lora_settings(args.rank),
                           plan=Plan(micro_batch_size=256, all_positions=True))
    sampler, grader = learner.sampler(256), Grader(processes=0)
    loss = Loss("importance_sampling", entropy=False)
    times = []
    for step in range(args.steps):
        start = time.perf_counter()
        params = SamplingParams(temperature=1.0, max_tokens=args.max_tokens, seed=step)
        groups = sampler.sample(prompts, args.group_size, params)
        sampled = time.perf_counter()
        datums = []
        for problem, prompt, group in zip(chosen, prompts, groups, strict=True):
            for c, a in zip(group, advantages(problem, [c.text for c in group], grader), strict=True):
                sequence = prompt + list(c.token_ids)
                datums.append(Datum.from_sequence(sequence, len(prompt), 1.0, c.logprobs, a))
        learner.forward_backward(datums, loss)
        learner.optim_step(AdamParams(learning_rate=3e-4))
        end = time.perf_counter()
        times.append((end - start, sampled - start, end - sampled, 0.0))
    return times


def through_the_api(args, work: Path) -> list[float]:
    import tinker

    from mathrl.grading import Grader

    chosen, prompts = problems(args.groups)
    server = subprocess.Popen([sys.executable, "-m", "mathrl.cli", "serve", "--tinker", "--model", "tiny",
                               "--port", "0", "--root", str(work)], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True)
    url = "http://127.0.0.1:" + re.search(r"127\.0\.0\.1:(\d+)", server.stdout.readline())[1]
    os.environ.update(TINKER_BASE_URL=url, TINKER_API_KEY="tml-local", TINKER_TELEMETRY="0")
    grader = Grader(processes=0)
    try:
        service = tinker.ServiceClient()
        client = service.create_lora_training_client(base_model="tiny", rank=args.rank).result()
        sampler = client.save_weights_and_get_sampling_client()
        times = []
        for step in range(args.steps):
            start = time.perf_counter()
            params = tinker.SamplingParams(max_tokens=args.max_tokens, temperature=1.0, seed=step, stop=[2])

            replies = asyncio.run(sample_all(sampler, prompts, args.group_size, params))
            sampled = time.perf_counter()
            datums = []
            for problem, prompt, reply in zip(chosen, prompts, replies, strict=True):
                texts = [sampler_text(s.tokens) for s in reply.sequences]
                for s, a in zip(reply.sequences, advantages(problem, texts, grader), strict=True):
                    full = prompt + list(s.tokens)
                    pad = len(prompt) - 1
                    datums.append(tinker.Datum(
                        model_input=tinker.ModelInput.from_ints(full[:-1]),
                        loss_fn_inputs={"target_tokens": full[1:], "logprobs": [0.0] * pad + list(s.logprobs),
                                        "advantages": [0.0] * pad + [a] * len(s.tokens)}))
            client.forward_backward(datums, "importance_sampling").result()
            client.optim_step(tinker.AdamParams(learning_rate=3e-4)).result()
            trained = time.perf_counter()
            sampler = client.save_weights_and_get_sampling_client()
            end = time.perf_counter()
            times.append((end - start, sampled - start, trained - sampled, end - trained))
        return times
    finally:
        server.kill()
        server.wait()


async def sample_all(sampler, prompts, n, params):
    import tinker

    return await asyncio.gather(*[sampler.sample_async(tinker.ModelInput.from_ints(p), num_samples=n,
                                                       sampling_params=params) for p in prompts])


def sampler_text(tokens) -> str:
    from mathrl.models import load_tokenizer

    return load_tokenizer("tiny").decode(list(tokens), skip_special_tokens=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--groups", type=int, default=16)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--steps", type=int, default=6)
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        local = in_process(args, Path(tmp) / "local")
        api = through_the_api(args, Path(tmp) / "api")
    def medians(times):
        return [statistics.median(t[i] for t in times[1:]) for i in range(4)]

    a, b = medians(local), medians(api)
    print(f"tiny, {args.groups} problems x {args.group_size} samples x {args.max_tokens} tokens, "
          f"LoRA rank {args.rank}, {args.steps} steps (medians after the first), "
          f"{torch.get_num_threads()} threads; seconds")
    print(f"{'':18} {'step':>6} {'sample':>7} {'train':>6} {'publish':>8}")
    for name, m in (("in process", a), ("through the API", b)):
        print(f"{name:18} {m[0]:6.2f} {m[1]:7.2f} {m[2]:6.2f} {m[3]:8.2f}")
    print(f"the API / in process: {b[0] / a[0]:.2f}x per step (target < 1.30x)")


if __name__ == "__main__":
    main()
