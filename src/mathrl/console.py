"""The one way commands print: a rich console that wraps and truncates only for a person.

In a terminal, rich fits tables and lines to the window. Anywhere else (a CI log, ``| tee``,
``> file``) nothing is cut or wrapped: every name and command line comes out whole, so it can be
copied back into a shell. ``COLUMNS`` still wins where a user sets it.
"""

from __future__ import annotations

import os
import sys
import time

from rich.console import Console

# Wide enough that no table cell or line is ever folded; rich pads nothing to this width.
UNBOUNDED = 100_000
# What fills the width instead of holding text (rules, panels) is drawn this wide in a log.
LOG_WIDTH = 100


class LogConsole(Console):
    """Unbounded for text and tables, but a rule is a line of :data:`LOG_WIDTH` columns (drawn at
    the console's width it would be 100,000 characters long)."""

    def rule(self, title="", *, characters: str = "─", style="rule.line", align="center") -> None:
        from rich.rule import Rule

        self.print(Rule(title, characters=characters, style=style, align=align), width=LOG_WIDTH)


def make_console(**kwargs) -> Console:
    """A ``rich`` console for stdout: terminal-sized on a TTY, unbounded width otherwise."""
    if not sys.stdout.isatty() and "COLUMNS" not in os.environ and "width" not in kwargs:
        return LogConsole(width=UNBOUNDED, soft_wrap=True, **kwargs)
    return Console(**kwargs)


class LogProgress:
    """Progress for a log: instead of a bar (which a pipe shows as nothing, or as one line
    rewritten in place), one line every ``interval_s`` seconds and one at the end, each with the
    count, the rate since the start and the time left: ``eval arith: 120/300 (40%), 3.1/s, ETA
    58s``. The subset of ``rich.progress.Progress`` the commands use."""

    def __init__(self, console: Console, interval_s: float | None = None):
        self.console = console
        self.interval_s = float(os.environ.get("MATHRL_PROGRESS_S", 30)) if interval_s is None else interval_s
        self.tasks: dict[int, dict] = {}

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc) -> None:
        pass

    def add_task(self, description: str, total: float | None = None, **fields) -> int:
        task = len(self.tasks)
        self.tasks[task] = {"description": description, "total": total, "completed": 0, "fields": fields,
                            "start": time.monotonic(), "first": None, "printed": time.monotonic()}
        return task

    def update(self, task: int, completed: float | None = None, total: float | None = None, **fields) -> None:
        state = self.tasks[task]
        if total is not None:
            state["total"] = total
        state["fields"].update(fields)
        if completed is None:
            return
        now = time.monotonic()
        if state["first"] is None:  # what a resumed run found done does not count toward the rate
            state["first"], state["start"] = completed, now
        state["completed"] = completed
        finished = state["total"] is not None and completed >= state["total"]
        if finished or now - state["printed"] >= self.interval_s:
            state["printed"] = now
            self.console.print(self.line(state, now), markup=False, highlight=False)

    @staticmethod
    def line(state: dict, now: float) -> str:
        done, total = state["completed"], state["total"]
        elapsed = now - state["start"]
        rate = (done - state["first"]) / elapsed if elapsed > 0 else 0.0
        text = f"{state['description']}: {done:g}"
        text += (f"/{total:g} ({100 * done / total:.0f}%)" if total else "") + f", {rate:.2f}/s"
        if total and rate > 0 and done < total:
            left = (total - done) / rate
            text += f", ETA {int(left // 60)}m{int(left % 60):02d}s" if left >= 60 else f", ETA {left:.0f}s"
        info = state["fields"].get("info")
        return f"{text}  {info}" if info else text


def make_progress(console: Console, *extra_columns):
    """A progress display: rich's bar (with ``extra_columns``) in a terminal, :class:`LogProgress`
    lines anywhere else."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    if not console.is_terminal:  # a pipe, a file, CI (LogConsole among them)
        return LogProgress(console)
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeRemainingColumn(), *extra_columns, console=console, transient=True)
