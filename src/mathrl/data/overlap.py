"""Contamination check: exact and n-gram overlap between a training set and a benchmark."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from mathrl.types import Problem


def exact_key(text: str) -> str:
    """Problem text with ``$`` and all whitespace removed: ``Evaluate $\\log_8 2$.`` and
    ``Evaluate $\\log_82$.`` are one problem (the MANIFEST's normalisation)."""
    return re.sub(r"\s+", "", text.replace("$", ""))


def words(text: str) -> list[str]:
    """The words n-grams are taken over: ``$`` removed, split on whitespace."""
    return text.replace("$", " ").split()


@dataclass(frozen=True)
class OverlapPair:
    train: Problem
    eval: Problem
    exact: bool
    shared_ngrams: int
    fraction: float  # shared n-grams / the benchmark problem's n-grams (1.0 for exact pairs)


@dataclass(frozen=True)
class OverlapReport:
    n: int
    n_train: int
    n_eval: int
    pairs: tuple[OverlapPair, ...]

    @property
    def exact_pairs(self) -> list[OverlapPair]:
        return [p for p in self.pairs if p.exact]

    @property
    def ngram_pairs(self) -> list[OverlapPair]:
        return [p for p in self.pairs if not p.exact]

    def eval_ids(self, exact: bool) -> set[str]:
        """Ids of benchmark problems with an exact (or, if not ``exact``, any) overlap."""
        return {p.eval.id for p in self.pairs if p.exact or not exact}


def _ngrams(text: str, n: int) -> set[int]:
    w = words(text)
    return {hash(tuple(w[i:i + n])) for i in range(len(w) - n + 1)}


def find_overlap(train: Sequence[Problem], evals: Sequence[Problem], n: int = 13) -> OverlapReport:
    """Every (train, eval) pair that is identical after normalisation or shares a word n-gram,
    exact pairs first, then by the fraction of the benchmark problem's n-grams shared.

    When both sides are the same dataset (same ids), a problem is not compared with itself and
    each pair is reported once.
    """
    same_set = [p.id for p in train] == [p.id for p in evals]
    by_key: dict[str, list[int]] = defaultdict(list)
    by_ngram: dict[int, list[int]] = defaultdict(list)
    for i, problem in enumerate(train):
        by_key[exact_key(problem.problem)].append(i)
        for g in _ngrams(problem.problem, n):
            by_ngram[g].append(i)
    pairs = []
    for j, problem in enumerate(evals):
        exact = set(by_key.get(exact_key(problem.problem), ()))
        grams = _ngrams(problem.problem, n)
        shared: dict[int, int] = defaultdict(int)
        for g in grams:
            for i in by_ngram.get(g, ()):
                shared[i] += 1
        for i in exact | set(shared):
            if same_set and i >= j:
                continue
            fraction = 1.0 if i in exact else shared[i] / len(grams)
            pairs.append(OverlapPair(train[i], problem, i in exact, shared.get(i, 0), fraction))
    pairs.sort(key=lambda p: (not p.exact, -p.fraction))
    return OverlapReport(n, len(train), len(evals), tuple(pairs))
