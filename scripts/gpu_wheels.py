"""``make gpu-wheels``: what a GPU machine without a package registry needs to install mathrl,
as wheels in one folder (``build/gpu-wheels``, ignored by git), checked to stay under the 64 MiB
that travels with a run.

The GPU image (see docs/gpu.md) has torch, transformers, peft, accelerate, safetensors, numpy,
sympy, pyyaml and triton. Missing: the build backend an editable or wheel install of mathrl
needs (setuptools, wheel) and rich with its own dependencies (mathrl's console output). The
benchmark itself (``benchmarks/gpu.py``) needs none of them: ``PYTHONPATH=src`` runs it as is.
mathrl's own wheel is built here too, so ``pip install --no-index --find-links build/gpu-wheels
--no-deps mathrl`` works there.

    python scripts/gpu_wheels.py [--python-version 3.12] [--out build/gpu-wheels]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

PURE = ["setuptools==84.2.1", "wheel==0.45.1", "rich==15.0.0", "markdown-it-py==4.3.0", "mdurl==0.1.2",
        "pygments==2.21.0"]
LIMIT_BYTES = 64 * 2**20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("build/gpu-wheels"))
    parser.add_argument("--python-version", default="3.12")
    args = parser.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    pip = [sys.executable, "-m", "pip"]
    subprocess.run([*pip, "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version",
                    args.python_version, "--implementation", "py", "--abi", "none", "--platform", "any",
                    "-d", str(args.out), *PURE], check=True)
    subprocess.run([*pip, "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(args.out),
                    str(Path(__file__).parents[1])], check=True)
    files = sorted(args.out.glob("*.whl"))
    total = sum(f.stat().st_size for f in files)
    for f in files:
        print(f"{f.stat().st_size / 2**20:7.2f} MiB  {f.name}")
    print(f"{total / 2**20:7.2f} MiB in {len(files)} wheels ({args.out}); the limit is "
          f"{LIMIT_BYTES / 2**20:.0f} MiB")
    if total > LIMIT_BYTES:
        print("over the limit: the folder cannot travel with a run", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
