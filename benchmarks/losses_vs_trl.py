"""mathrl's losses against TRL 1.16's GRPO loss on the same tensors: loss value and gradient.

One tiny-model policy (a LoRA adapter with random weights, so the gradient is not trivially
zero), one batch of prompt + completion sequences, sampler logprobs a little off the policy's
(so ratios differ from 1 and some are clipped), advantages of both signs, and for the KL term
the base model (the adapter off) as the reference, as both trainers use it for a new adapter.
TRL computes its loss with ``GRPOTrainer._compute_loss`` (its own forward, full logits); mathrl
with the local learner's ``accumulate`` (chunked logits). For each pair of settings that mean
the same thing, the script prints the relative difference of the losses and of the gradients
(largest entry difference over largest entry), which should be float noise:

    python benchmarks/losses_vs_trl.py          # needs trl==1.16.0 (pip install -e ".[bench]")
"""

from __future__ import annotations

import copy
import random
import tempfile
import warnings

import torch

warnings.filterwarnings("ignore")

# (what, TRL GRPOConfig settings, mathrl Loss arguments, mathrl normalization)
CASES = [
    ("importance_sampling (TRL dapo, no clipping)", dict(loss_type="dapo", epsilon=1e9, epsilon_high=1e9),
     dict(name="importance_sampling"), "token_mean"),
    ("ppo 0.8/1.28, token mean (TRL dapo)", dict(loss_type="dapo", epsilon=0.2, epsilon_high=0.28),
     dict(name="ppo", config={"clip_low_threshold": 0.8, "clip_high_threshold": 1.28}), "token_mean"),
    ("ppo, sequence mean (TRL grpo)", dict(loss_type="grpo", epsilon=0.2, epsilon_high=0.2),
     dict(name="ppo"), "sequence_mean"),
    ("ppo, constant length (TRL dr_grpo)", dict(loss_type="dr_grpo", epsilon=0.2, epsilon_high=0.2),
     dict(name="ppo"), "constant"),
    ("cispo 0/5 (TRL cispo, epsilon_high 5)", dict(loss_type="cispo", epsilon_high=5.0),
     dict(name="cispo", config={"clip_low_threshold": 0.0, "clip_high_threshold": 5.0}), "token_mean"),
    ("ppo + KL k3 x ratio (TRL beta, use_bias_correction_kl)",
     dict(loss_type="dapo", epsilon=0.2, epsilon_high=0.28, beta=0.04, use_bias_correction_kl=True),
     dict(name="ppo", config={"clip_low_threshold": 0.8, "clip_high_threshold": 1.28}, kl_coef=0.04,
          kl_estimator="k3_is"), "token_mean"),
    ("ppo + KL k3 (TRL beta, no bias correction)",
     dict(loss_type="dapo", epsilon=0.2, epsilon_high=0.28, beta=0.04, use_bias_correction_kl=False),
     dict(name="ppo", config={"clip_low_threshold": 0.8, "clip_high_threshold": 1.28}, kl_coef=0.04,
          kl_estimator="k3"), "token_mean"),
]
MAX_COMPLETION = 12


def policy():
    from peft import LoraConfig, get_peft_model

    from mathrl.models import load_model

    torch.manual_seed(0)
    model = get_peft_model(load_model("tiny", torch.device("cpu"), torch.float32),
                           LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM"))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    model.train()
    return model


def batch(model, n=6, seed=1):
    """Prompts (left-padded, as TRL holds them), completions (right-padded), logprobs."""
    from mathrl.train.policy import token_logprobs

    rng = random.Random(seed)
    prompts = [[rng.randrange(5, 250) for _ in range(rng.randint(3, 7))] for _ in range(n)]
    completions = [[rng.randrange(5, 250) for _ in range(rng.randint(3, MAX_COMPLETION))] for _ in range(n)]
    advantages = [(-1) ** i * (0.25 + rng.random()) for i in range(n)]
    with torch.no_grad():
        current, reference = [], []
        for p, c in zip(prompts, completions, strict=True):
            ids = torch.tensor([p + c])
            current.append(token_logprobs(model, ids, None)[0, len(p):].tolist())
            with model.disable_adapter():  # the KL reference: the base model, as a new adapter's
                reference.append(token_logprobs(model, ids, None)[0, len(p):].tolist())
    generator = torch.Generator().manual_seed(seed)
    # Sampler logprobs a little off the policy's: ratios around 1, some clipped.
    sampler = [[x + 0.3 * torch.randn((), generator=generator).item() for x in lp] for lp in current]
    return prompts, completions, advantages, sampler, reference


def trl_loss_and_grads(model, tokenizer, data, settings) -> tuple[float, dict]:
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    prompts, completions, advantages, sampler, reference = data
    with tempfile.TemporaryDirectory() as out:
        config = GRPOConfig(output_dir=out, per_device_train_batch_size=len(prompts), num_generations=2,
                            max_completion_length=MAX_COMPLETION, report_to="none", use_cpu=True,
                            bf16=False, fp16=False, gradient_checkpointing=False, logging_steps=1000,
                            **settings)
        trainer = GRPOTrainer(model=model, reward_funcs=lambda completions, **_: [0.0] * len(completions),
                              args=config, train_dataset=Dataset.from_list([{"prompt": "x"}] * 4),
                              processing_class=tokenizer)
    width_p, width_c = max(map(len, prompts)), max(map(len, completions))
    pad = tokenizer.pad_token_id

    def padded(rows, width, left, fill):
        return torch.tensor([([fill] * (width - len(r)) + r) if left else (r + [fill] * (width - len(r)))
                             for r in rows])

    mask = padded([[1] * len(c) for c in completions], width_c, False, 0)
    inputs = {
        "prompt_ids": padded(prompts, width_p, True, pad),
        "prompt_mask": padded([[1] * len(p) for p in prompts], width_p, True, 0),
        "completion_ids": padded(completions, width_c, False, pad),
        "completion_mask": mask,
        "advantages": torch.tensor(advantages),
        "old_per_token_logps": padded(sampler, width_c, False, 0.0).float(),
        "ref_per_token_logps": padded(reference, width_c, False, 0.0).float(),
        "num_items_in_batch": mask.sum(),
    }
    trainer.model.zero_grad(set_to_none=True)
    trainer.current_gradient_accumulation_steps = 1  # what its training_step sets: one micro-batch
    loss = trainer._compute_loss(trainer.model, inputs)
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}


def mathrl_loss_and_grads(model, tokenizer, data, loss_args, normalization) -> tuple[float, dict]:
    from mathrl.train.learner import Datum
    from mathrl.train.local import Plan, accumulate, reference_policy
    from mathrl.train.losses import Loss
    from mathrl.train.policy import LogprobForward
    from mathrl.train.rl import token_weight

    prompts, completions, advantages, sampler, reference = data
    total = sum(map(len, completions))
    def weight(c):
        return token_weight(len(c), len(prompts), total, MAX_COMPLETION, normalization)

    datums = [Datum.from_sequence(p + c, len(p), weight(c), lp, a)
              for p, c, lp, a in zip(prompts, completions, sampler, advantages, strict=True)]
    model.zero_grad(set_to_none=True)
    loss = Loss(entropy=False, **loss_args)
    result = accumulate(LogprobForward(model), datums, loss, Plan(micro_batch_size=len(datums)),
                        tokenizer.pad_token_id, torch.device("cpu"),
                        reference=reference_policy(model, new_adapter=True) if loss.needs_reference else None)
    return result.metrics["train/loss"], {n: p.grad.clone() for n, p in model.named_parameters()
                                          if p.grad is not None}


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item() / max(b.abs().max().item(), 1e-30)


def main() -> None:
    from mathrl.models import load_tokenizer

    tokenizer = load_tokenizer("tiny")
    model = policy()
    data = batch(model)
    print(f"tiny + LoRA r8 (random B), {len(data[0])} sequences, fp32; relative difference "
          "(max |a - b| / max |b|) of the loss and of the gradient, mathrl vs TRL 1.16")
    print(f"{'settings':<56} {'loss mathrl':>12} {'loss TRL':>12} {'loss diff':>10} {'grad diff':>10}")
    for what, trl_settings, loss_args, normalization in CASES:
        # TRL's own copy: with a KL term it adds a "ref" adapter to the model it is given.
        theirs, trl_grads = trl_loss_and_grads(copy.deepcopy(model), tokenizer, data, trl_settings)
        ours, our_grads = mathrl_loss_and_grads(model, tokenizer, data, loss_args, normalization)
        grad = max(relative(our_grads[n], trl_grads[n]) for n in our_grads)
        loss_diff = abs(ours - theirs) / abs(theirs)
        print(f"{what:<56} {ours:>12.6f} {theirs:>12.6f} {loss_diff:>10.1e} {grad:>10.1e}")


if __name__ == "__main__":
    main()
