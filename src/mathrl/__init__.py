"""mathrl: post-train language models for mathematical reasoning on your own hardware."""

__version__ = "0.1.0"
