"""benchmarks/gpu.py, the prepared GPU measurement, in its smoke mode on this machine's CPU: every
section runs on tiny shapes and both tables are written, so the script cannot rot between GPUs."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]


def test_the_gpu_check_runs_every_section_on_tiny_shapes_and_writes_its_tables(tmp_path):
    script = ROOT / "benchmarks" / "gpu.py"
    done = subprocess.run([sys.executable, str(script), "--smoke", "--out", str(tmp_path)],
                          env={**os.environ, "PYTHONPATH": str(ROOT / "src"), "MATHRL_SMOKE_CPU": "1"},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    sections = results["sections"]
    assert list(sections) == ["memory", "throughput", "sampler", "publish", "fsdp"]
    assert not [name for name, s in sections.items() if "error" in s]
    assert len(sections["memory"]["rows"]) == 4  # GRPO and SFT, with and without checkpointing
    assert all(r["tokens/s"] > 0 and r["MFU %"] > 0 for r in sections["throughput"]["rows"])
    assert {r["fine-tuning"] for r in sections["throughput"]["rows"]} == {"lora", "full"}
    assert sections["sampler"]["rows"][0]["tokens/s"] > 0
    assert sections["publish"]["rows"][0]["publish s"] > 0
    assert math.isfinite(sections["fsdp"]["rows"][0]["loss"])
    table = (tmp_path / "results.md").read_text()
    assert all(f"## {name}" in table for name in sections)
