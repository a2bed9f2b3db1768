"""Sampling a problem list in fixed, seeded chunks: the unit of resumption for eval and for
trace collection.

Chunk ``i`` is always the same problems sampled with a seed derived from the run seed, a key
(benchmark or dataset name) and ``i``, so a rerun that skips the chunks already on disk samples
the rest exactly as an uninterrupted run would.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Container, Iterator, Sequence
from dataclasses import replace

from mathrl.sampling import Prompt, Sampler, SamplingParams
from mathrl.types import Completion, Problem
from mathrl.watchdog import phase


def chunk_seed(seed: int, key: str, chunk: int) -> int:
    digest = hashlib.sha256(f"{seed}/{key}/{chunk}".encode()).hexdigest()
    return int(digest[:8], 16)


def sample_chunks(
    sampler: Sampler,
    problems: Sequence[Problem],
    prompt_of: Callable[[Problem], Prompt],
    n: int,
    params: SamplingParams,
    seed: int,
    key: str,
    chunk_size: int,
    done: Container[str] = (),
) -> Iterator[tuple[list[tuple[Problem, list[Completion]]], float]]:
    """Yield ``([(problem, its n completions), ...], sampling seconds)`` per chunk with work left;
    problems whose id is in ``done`` are neither returned nor (when the whole chunk is done) sampled."""
    for index in range(0, len(problems), chunk_size):
        chunk = problems[index : index + chunk_size]
        if all(p.id in done for p in chunk):
            continue
        start = time.perf_counter()
        with phase("sampling"):
            groups = sampler.sample(
                [prompt_of(p) for p in chunk], n, replace(params, seed=chunk_seed(seed, key, index))
            )
        seconds = time.perf_counter() - start
        yield [(p, g) for p, g in zip(chunk, groups, strict=True) if p.id not in done], seconds
