"""The one way commands print: a rich console that wraps and truncates only for a person.

In a terminal, rich fits tables and lines to the window. Anywhere else (a CI log, ``| tee``,
``> file``) nothing is cut or wrapped: every name and command line comes out whole, so it can be
copied back into a shell. ``COLUMNS`` still wins where a user sets it.
"""

from __future__ import annotations

import os
import sys

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
