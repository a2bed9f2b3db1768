import random

import numpy as np
import pytest
import torch

from mathrl.device import choose_device, choose_dtype
from mathrl.seeding import seed_everything


def test_explicit_device_and_cpu_dtype():
    assert choose_device("cpu") == torch.device("cpu")
    assert choose_dtype(torch.device("cpu")) == torch.float32
    assert choose_dtype(torch.device("cpu"), "bf16") == torch.bfloat16
    if not torch.cuda.is_available():
        assert choose_device("auto").type in {"cpu", "mps"}


def test_unknown_dtype_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown dtype 'float8'"):
        choose_dtype(torch.device("cpu"), "float8")


def test_seed_everything_seeds_every_generator():
    def draw():
        return random.random(), np.random.rand(), torch.rand(1).item()

    seed_everything(11)
    first = draw()
    seed_everything(11)
    assert draw() == first
    seed_everything(12)
    assert draw() != first
