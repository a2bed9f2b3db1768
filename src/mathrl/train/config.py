"""What every training recipe shares (:class:`TrainConfig`), the base of ``SFTConfig`` and
``GRPOConfig``: the policy, the optimizer and its schedule, how a batch is cut into
forward/backward passes, checkpoints, the device, evaluation and plugins. The YAML keys are
flat as before (``lr: 2e-4``, ``lora.rank: 64``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from mathrl.eval.config import EvalSettings
from mathrl.grading.equivalence import DEFAULT_TIMEOUT_S
from mathrl.grading.grader import DEFAULT_PROCESSES
from mathrl.plugins import load_plugin
from mathrl.train.learner import AdamParams
from mathrl.train.policy import DEFAULT_CHUNK_TOKENS, LoraSettings
from mathrl.train.schedule import Schedule, lr_multiplier


@dataclass(frozen=True)
class GradingSettings:
    """The grader of rewards and evaluations: seconds per comparison, and worker processes (0:
    grade in the trainer's process; see :class:`mathrl.grading.Grader`)."""

    timeout: float = DEFAULT_TIMEOUT_S
    processes: int = DEFAULT_PROCESSES

    def __post_init__(self):
        if self.timeout <= 0 or self.processes < 0:
            raise ValueError("grading.timeout must be > 0 and grading.processes >= 0")


@dataclass(frozen=True)
class TinkerSettings:
    """Where ``learner: tinker`` trains: the service's URL (None: the SDK's default, or
    ``$TINKER_BASE_URL``) and the base model's name there (None: ``model``). The LoRA rank is
    ``lora.rank``; the key is read from ``$TINKER_API_KEY`` and never written anywhere."""

    base_url: str | None = None
    model: str | None = None


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    model: str  # 'tiny', a model folder, or a hub id
    # Where the weights are trained: in this process (or torchrun's), or on the Tinker service
    # (mathrl.tinker.learner: LoRA only; what it has no equivalent for is refused up front).
    learner: Literal["local", "tinker"] = "local"
    tinker: TinkerSettings = field(default_factory=TinkerSettings)
    adapter: str | None = None  # start from this LoRA adapter (an SFT or RL run's final/)
    finetune: Literal["lora", "full"] = "lora"
    lora: LoraSettings = field(default_factory=LoraSettings)
    epochs: int = 1
    max_steps: int | None = None  # stop after this many optimizer steps (None: all epochs)
    # An epoch's last, smaller batch: its own step ("keep"), or dropped (every step the same shape).
    last_batch: Literal["keep", "drop"] = "drop"
    lr: float = 1e-4
    schedule: Schedule = "constant"
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    adam_eps: float = 1e-8
    weight_decay: float = 0.0
    grad_clip: float = 1.0  # max global grad norm; 0 = off
    micro_batch_size: int = 16  # sequences (packed: rows) per forward/backward
    micro_batch_tokens: int | None = None  # and at most this many padded tokens per forward/backward
    gradient_checkpointing: bool = False  # recompute layer activations in the backward pass
    logprob_chunk_tokens: int = DEFAULT_CHUNK_TOKENS  # LM-head rows at a time (bounds the logits' memory)
    save_every: int = 0  # checkpoint every N steps (0: only at the end)
    keep_checkpoints: int = 2
    seed: int = 0
    device: str = "auto"
    dtype: str = "auto"
    mirror: str = "none"  # "tensorboard" or "wandb" mirror metrics.jsonl
    data_dir: str | None = None  # benchmark files (default $MATHRL_DATA_DIR)
    eval: EvalSettings = field(default_factory=EvalSettings)
    grading: GradingSettings = field(default_factory=GradingSettings)
    # Modules (names or .py files) imported before anything else: they register losses, rewards
    # or datasets a recipe then names (docs/extending.md).
    plugins: tuple[str, ...] = ()

    def __post_init__(self):
        for plugin in self.plugins:
            load_plugin(plugin)
        if self.finetune not in ("lora", "full"):
            raise ValueError(f"finetune must be 'lora' or 'full', got {self.finetune!r}")
        if self.micro_batch_size < 1:
            raise ValueError("micro_batch_size must be >= 1")
        if self.micro_batch_tokens is not None and self.micro_batch_tokens < 1:
            raise ValueError("micro_batch_tokens must be >= 1 (or null for no token budget)")
        if self.epochs < 1:
            raise ValueError("epochs must be >= 1")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError("max_steps must be >= 1 (or null: all epochs)")
        if self.save_every < 0 or self.eval.every < 0:
            raise ValueError("save_every and eval.every must be >= 0")
        if self.learner not in ("local", "tinker"):
            raise ValueError(f"learner must be 'local' or 'tinker', got {self.learner!r}")

    def check_learner(self) -> None:
        """Refuse, naming the setting, what the chosen learner cannot do (subclasses call it
        once their own fields are checked)."""
        if self.learner == "tinker":
            from mathrl.tinker.learner import check_recipe

            check_recipe(self)

    def adam(self, step: int, total_steps: int) -> AdamParams:
        """The optimizer settings of step ``step`` (0-based), the learning rate scheduled."""
        multiplier = lr_multiplier(step, total_steps, self.schedule, self.warmup_steps, self.min_lr_ratio)
        return AdamParams(learning_rate=self.lr * multiplier, beta1=self.adam_beta1, beta2=self.adam_beta2,
                          eps=self.adam_eps, weight_decay=self.weight_decay,
                          grad_clip_norm=max(0.0, self.grad_clip))
