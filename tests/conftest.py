import os
from pathlib import Path

import pytest
import torch

# The watchdog (mathrl.watchdog) is off in tests unless a test asks for it: a shared, slow machine
# must not trip it. Subprocesses the tests start inherit this.
os.environ.setdefault("MATHRL_WATCHDOG_S", "0")

from mathrl.models import load_model, load_tokenizer


@pytest.fixture(scope="session")
def tiny():
    """The shipped tiny model and its tokenizer, on the CPU in fp32."""
    return load_model("tiny", torch.device("cpu"), torch.float32), load_tokenizer("tiny")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The benchmark files (../shared/data beside the checkout, or $MATHRL_DATA_DIR)."""
    path = Path(os.environ.get("MATHRL_DATA_DIR", Path(__file__).parents[2] / "shared" / "data"))
    if not (path / "MANIFEST.md").is_file():
        pytest.fail(f"benchmark data not found at {path}; set MATHRL_DATA_DIR")
    return path
