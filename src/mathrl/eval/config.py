"""An evaluation's settings, in one place: the protocol (what makes two evaluations comparable),
``mathrl eval``'s config (a model and the protocol) and a training run's evaluations. Light to
import: the CLI reads its defaults from here."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from mathrl.prompts import PromptProtocol


@dataclass(frozen=True, kw_only=True)
class EvalProtocol:
    """What makes two evaluations comparable: the benchmarks and how they are sampled."""

    benchmarks: tuple[str, ...] = ()
    n: int = 1  # samples per problem
    temperature: float = 0.01  # at or below 0.01: greedy
    top_p: float = 1.0
    max_tokens: int = 2048
    num_problems: int | None = None  # a seeded, stable subsample
    shuffle_seed: int | None = None  # the first num_problems of a hub-style shuffle (else a stable sample)
    prompt: PromptProtocol | None = None
    chunk_size: int = 32  # problems per resumable unit (and per sampling call)

    def __post_init__(self):
        if self.n < 1 or self.max_tokens < 1 or self.chunk_size < 1:
            raise ValueError("n, max_tokens and chunk_size must be >= 1")


@dataclass(frozen=True, kw_only=True)
class EvalConfig(EvalProtocol):
    """``mathrl eval``'s settings: a model and the protocol (its options are these fields)."""

    model: str
    adapter: str | None = None
    seed: int = 0
    prompt: PromptProtocol = field(default_factory=PromptProtocol)


@dataclass(frozen=True, kw_only=True)
class EvalSettings(EvalProtocol):
    """A training run's evaluations, through ``mathrl eval``'s code: at the end, and every
    ``every`` steps. ``prompt`` unset: the run's own training prompt (GRPO), mathrl's default
    (SFT)."""

    every: int = 0  # steps between periodic evals (0: only at the end)
    batch_size: int = 64  # sequences decoded together (in process)

    def config(self, model: str, seed: int, prompt: PromptProtocol | None) -> EvalConfig:
        protocol = {f.name: getattr(self, f.name) for f in fields(EvalProtocol)}
        protocol["prompt"] = self.prompt or prompt or PromptProtocol()
        return EvalConfig(model=model, seed=seed, **protocol)
