import pytest
import torch

from mathrl.models import load_model, load_tokenizer


@pytest.fixture(scope="session")
def tiny():
    """The shipped tiny model and its tokenizer, on the CPU in fp32."""
    return load_model("tiny", torch.device("cpu"), torch.float32), load_tokenizer("tiny")
