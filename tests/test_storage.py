"""A full disk or a read-only folder stops a command with one line naming the path; nothing is
left half-written, and the run resumes once space is back."""

import json
import resource
import shutil
import subprocess
import sys

import pytest
from recipes import logged_steps, run_recipe

from mathrl.fileio import StorageError, storage_reason, write_atomic

GRPO = ["max_steps=4", "save_every=2", "groups_per_batch=4", "group_size=4", "max_tokens=48",
        "eval.benchmarks=[]"]


def test_storage_errors_are_recognised_however_a_library_wraps_them(tmp_path):
    assert storage_reason(OSError(28, "No space left on device")) == "no space left on the device"
    assert storage_reason(RuntimeError("Error while serializing: I/O error: File too large (os error 27)"))
    # torch's zip writer on a full disk: recognised by the free space left where it was writing.
    short_write = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 254272 vs 254160")
    assert storage_reason(short_write) is None
    assert storage_reason(short_write, tmp_path) is None  # this disk has room: a real error, raised as is
    assert storage_reason(ValueError("bad value")) is None
    assert storage_reason(OSError(2, "No such file or directory")) is None


@pytest.mark.slow
def test_a_run_whose_disk_fills_stops_with_one_line_and_resumes_once_space_is_back(tmp_path):
    """RLIMIT_FSIZE (what a full disk does to a write, without a filesystem to fill): each
    checkpoint's adapter (1.2 MB) is over the limit, the metrics lines are not."""
    run = tmp_path / "run"

    def limited():
        resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, 1_000_000))

    full = subprocess.run([sys.executable, "-m", "mathrl.cli", "grpo", "configs/tiny/grpo.yaml", "--out",
                           str(run), *GRPO], capture_output=True, text=True, timeout=600, preexec_fn=limited)
    assert full.returncode == 2
    assert full.stderr.strip().splitlines() == [
        f"mathrl grpo: error: File too large writing {run}/checkpoints/step_000002: stopped, every finished "
        "file intact (checkpoints and records are written whole or not at all); free space (or make the "
        "folder writable) and rerun the same command to resume"]
    assert not list((run / "checkpoints").iterdir())  # no half-written checkpoint left behind
    assert [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    resumed = run_recipe("grpo", "configs/tiny/grpo.yaml", run, *GRPO)  # space is back
    assert resumed.returncode == 0, resumed.stderr
    assert logged_steps(run, "reward/mean") == [1, 2, 3, 4]
    assert (run / "final" / "adapter_model.safetensors").is_file()


def _namespaces() -> bool:
    """Whether this machine lets an unprivileged process mount a tmpfs in its own namespace."""
    import tempfile

    if shutil.which("unshare") is None:
        return False
    with tempfile.TemporaryDirectory() as folder:
        probe = (f"mount -t tmpfs -o size=1m tmpfs {folder} && touch {folder}/x "
                 f"&& mount -o remount,ro {folder}")
        return subprocess.run(["unshare", "-rm", "sh", "-c", probe], capture_output=True).returncode == 0


@pytest.mark.slow
@pytest.mark.skipif(not _namespaces(), reason="needs `unshare -rm` to mount a small and a read-only tmpfs")
def test_a_full_then_read_only_tmpfs_stops_each_command_with_one_line_naming_the_path(tmp_path):
    """A real filesystem filling up (a 1.5 MB tmpfs: the first checkpoint does not fit), grown
    again (the run resumes), then remounted read-only (each command refuses with one line)."""
    mount, logs = tmp_path / "disk", tmp_path / "logs"
    mount.mkdir()
    logs.mkdir()

    def run(name, argv):
        return (f"{sys.executable} -m mathrl.cli {argv} > {logs}/{name}.out 2> {logs}/{name}.err; "
                f"echo $? > {logs}/{name}.rc; "
                f"cp {mount}/grpo/metrics.jsonl {logs}/{name}.metrics 2>/dev/null\n")

    grpo = f"grpo configs/tiny/grpo.yaml --out {mount}/grpo {' '.join(GRPO)}"
    script = (f"set -eu\nmount -t tmpfs -o size=1500k tmpfs {mount}\nset +e\n" + run("full", grpo)
              + f"mount -o remount,size=64m {mount}\n" + run("resumed", grpo)
              + f"mount -o remount,ro {mount}\n"
              + run("eval", f"eval --model tiny --benchmarks arith --num-problems 4 --out {mount}/eval")
              + run("grpo", f"grpo configs/tiny/grpo.yaml --out {mount}/grpo2 {' '.join(GRPO)}"))
    done = subprocess.run(["unshare", "-rm", "bash", "-c", script], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr

    def one_line(name):
        assert (logs / f"{name}.rc").read_text().strip() == "2"
        lines = (logs / f"{name}.err").read_text().strip().splitlines()
        assert len(lines) == 1 and "rerun the same command to resume" in lines[0], lines
        return lines[0]

    assert one_line("full").startswith(f"mathrl grpo: error: no space left on the device writing "
                                       f"{mount}/grpo/checkpoints/step_000002: ")
    assert [json.loads(line)["step"] for line in (logs / "full.metrics").read_text().splitlines()] == [1, 2]
    assert (logs / "resumed.rc").read_text().strip() == "0", (logs / "resumed.err").read_text()
    assert [json.loads(line)["step"] for line in (logs / "resumed.metrics").read_text().splitlines()] == \
        [1, 2, 3, 4]
    for command in ("eval", "grpo"):
        line = one_line(command)
        expected = f"mathrl {command}: error: read-only file system writing {mount}/{command}"
        assert line.startswith(expected), line


def test_write_atomic_leaves_no_partial_file_when_the_disk_refuses(tmp_path, monkeypatch):
    target = tmp_path / "state.json"
    write_atomic(target, "old")

    def full(self, data):
        self.open("wb").write(data[:3])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(type(target), "write_bytes", full)
    with pytest.raises(StorageError, match=f"no space left on the device writing {target}"):
        write_atomic(target, "new contents")
    monkeypatch.undo()
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]
