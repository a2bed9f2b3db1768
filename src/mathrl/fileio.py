"""Writing files so that an interrupted run never leaves one half-written."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` next to ``path`` and rename it into place."""
    write_atomic_bytes(path, text.encode("utf-8"))


def write_atomic_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` next to ``path`` and rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def append_lines(path: Path, lines: Iterable[str]) -> None:
    """Append lines in one write and fsync them: after a kill a file ends at most in one torn line."""
    with Path(path).open("a", encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in lines))
        f.flush()
        os.fsync(f.fileno())


def complete_lines(path: Path) -> list[str]:
    """The lines of ``path`` that were written whole (a last line without its newline was torn)."""
    if not Path(path).is_file():
        return []
    text = Path(path).read_text(encoding="utf-8")
    complete, _, _ = text.rpartition("\n")
    return [line for line in complete.splitlines() if line.strip()] if complete else []
