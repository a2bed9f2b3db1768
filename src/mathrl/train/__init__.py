"""Training: what SFT and GRPO share (policy setup, schedules, checkpoints, the metrics sink)."""
