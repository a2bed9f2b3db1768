"""Writing files so that an interrupted run never leaves one half-written, and a full or
read-only disk stops a run with one line naming the path."""

from __future__ import annotations

import contextlib
import errno
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from mathrl.errors import UserError

# The errors that mean "the storage refused", not "the program is wrong", and how libraries that
# wrap them (safetensors, torch's zip writer) spell them.
STORAGE_ERRNOS = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
                  errno.EFBIG: "file too large for the filesystem or the process's limit",
                  errno.EROFS: "read-only file system", errno.EACCES: "permission denied"}
_SPELLED = re.compile(r"No space left on device|Disk quota exceeded|File too large|Read-only file system|"
                      r"Permission denied|os error (28|122|27|30|13)\b", re.IGNORECASE)
# Below this much free space, an error met while writing is the disk filling: torch's zip writer
# reports a short write as "unexpected pos 254272 vs 254160", not as ENOSPC.
NEARLY_FULL_BYTES = 16 << 20


class StorageError(UserError):
    """The disk is full or the folder not writable: the run stopped, with nothing half-written."""


def storage_reason(err: BaseException, path: str | Path | None = None) -> str | None:
    """What the storage refused, if ``err`` (or what it wraps) is a full or read-only disk; with
    ``path`` (where it was writing), also any error met while that disk is nearly full."""
    seen, first = set(), err
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in STORAGE_ERRNOS:
            return STORAGE_ERRNOS[err.errno]
        if (m := _SPELLED.search(str(err))) is not None:
            return m[0]
        err = err.__cause__ or err.__context__
    writing_error = isinstance(first, OSError | RuntimeError)
    if path is not None and writing_error and _free_bytes(path) < NEARLY_FULL_BYTES:
        return "no space left on the device"
    return None


def _free_bytes(path: str | Path) -> float:
    """Free bytes on the filesystem of ``path`` (its nearest existing folder); inf if unknown."""
    folder = Path(path)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        stat = os.statvfs(folder)
    except OSError:
        return float("inf")
    return stat.f_bavail * stat.f_frsize


def storage_message(reason: str, path: str | Path | None) -> str:
    where = f" writing {path}" if path else ""
    return (f"{reason}{where}: stopped, every finished file intact (checkpoints and records are written "
            "whole or not at all); free space (or make the folder writable) and rerun the same command "
            "to resume")


@contextlib.contextmanager
def writing(path: str | Path) -> Iterator[None]:
    """Turn a full or read-only disk met inside the block into one :class:`StorageError` naming
    ``path``; any other error passes unchanged."""
    try:
        yield
    except StorageError:
        raise
    except Exception as err:
        reason = storage_reason(err, path)
        if reason is None:
            raise
        raise StorageError(storage_message(reason, path)) from err


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` next to ``path`` and rename it into place."""
    write_atomic_bytes(path, text.encode("utf-8"))


def write_atomic_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` next to ``path`` and rename it into place."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            tmp.write_bytes(data)
        except BaseException:
            tmp.unlink(missing_ok=True)  # a full disk: give back what the partial copy took
            raise
        os.replace(tmp, path)


def append_lines(path: Path, lines: Iterable[str]) -> None:
    """Append lines in one write and fsync them: after a kill a file ends at most in one torn line."""
    with writing(path), Path(path).open("a", encoding="utf-8") as f:
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
