"""How a batch of sequences is cut into micro-batches (forward/backward passes) and, for SFT,
packed into rows. Pure functions of the sequence lengths, so the plan is the same on a resume.

Gradient accumulation stays exact whatever the plan: every loss token carries a weight fixed
for the whole batch (SFT: 1 / the batch's target tokens; GRPO: :func:`mathrl.train.rl.token_weight`),
so the summed micro-batch gradients are the batch's gradient.
"""

from __future__ import annotations

from collections.abc import Sequence


def plan_micro_batches(
    lengths: Sequence[int], max_sequences: int, max_tokens: int | None = None
) -> list[list[int]]:
    """Indices of each micro-batch: sequences sorted by length (less padding), cut so that a
    micro-batch has at most ``max_sequences`` sequences and, with ``max_tokens``, at most that many
    padded tokens (sequences x its longest length). A sequence longer than the budget goes alone.

    >>> plan_micro_batches([5, 1, 3, 2], max_sequences=8, max_tokens=6)
    [[1, 3], [2], [0]]
    """
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    plan: list[list[int]] = []
    for i in order:
        current = plan[-1] if plan else None
        fits = (
            current is not None
            and len(current) < max_sequences
            and (max_tokens is None or (len(current) + 1) * lengths[i] <= max_tokens)
        )
        if fits:
            current.append(i)
        else:
            plan.append([i])
    return plan


def pack_rows(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Indices of the documents in each packed row: first-fit decreasing into rows of at most
    ``capacity`` tokens (a document longer than ``capacity`` gets a row of its own).

    >>> pack_rows([6, 3, 4, 2, 5], capacity=8)
    [[0, 3], [4, 1], [2]]
    """
    rows: list[list[int]] = []
    free: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        slot = next((r for r, space in enumerate(free) if space >= lengths[i]), None)
        if slot is None:
            rows.append([i])
            free.append(capacity - lengths[i])
        else:
            rows[slot].append(i)
            free[slot] -= lengths[i]
    return rows
