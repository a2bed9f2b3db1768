"""Choosing which problems of a dataset to use: filters, a stable seeded subsample, shuffling."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable, Sequence

from mathrl.types import Problem


def select(problems: Sequence[Problem], *, levels: Iterable[int] | None = None,
           subjects: Iterable[str] | None = None, num_problems: int | None = None,
           seed: int = 0, shuffle: bool = False, shuffle_seed: int | None = None) -> list[Problem]:
    """Filter by level and subject, then subsample and/or shuffle, both seeded.

    The subsample is stable: each problem gets a rank from a hash of (seed, id), and the
    ``num_problems`` lowest ranks are kept in dataset order. Asking for more problems keeps
    the ones already chosen (a 100-problem run is a prefix-compatible subset of a 200-problem
    one), and the choice does not depend on the file's row order.

    ``shuffle_seed`` instead takes the first ``num_problems`` of ``datasets.Dataset.shuffle(seed=
    shuffle_seed)`` over the rows in file order: the subset a hub-based script selects with
    ``load_dataset(...).shuffle(seed=42).select(range(100))`` (study 2's problems).
    """
    if shuffle_seed is not None:
        chosen = hub_shuffle(select(problems, levels=levels, subjects=subjects), shuffle_seed)
        return chosen[:num_problems] if num_problems is not None else chosen
    chosen = list(problems)
    if levels is not None:
        wanted = set(levels)
        chosen = [p for p in chosen if p.level in wanted]
    if subjects is not None:
        wanted_subjects = {s.lower() for s in subjects}
        chosen = [p for p in chosen if (p.subject or "").lower() in wanted_subjects]
    if num_problems is not None and num_problems < len(chosen):
        keep = set(sorted(range(len(chosen)), key=lambda i: _rank(seed, chosen[i].id))[:num_problems])
        chosen = [p for i, p in enumerate(chosen) if i in keep]
    if shuffle:
        random.Random(seed).shuffle(chosen)
    return chosen


def hub_shuffle(problems: Sequence[Problem], seed: int) -> list[Problem]:
    """``problems`` in the order ``datasets.Dataset.shuffle(seed=seed)`` puts rows in."""
    from datasets import Dataset

    order = Dataset.from_dict({"i": list(range(len(problems)))}).shuffle(seed=seed)["i"]
    return [problems[i] for i in order]


def _rank(seed: int, problem_id: str) -> str:
    return hashlib.sha256(f"{seed}\0{problem_id}".encode()).hexdigest()
