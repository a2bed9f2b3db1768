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


def make_console(**kwargs) -> Console:
    """A ``rich`` console for stdout: terminal-sized on a TTY, unbounded width otherwise."""
    if not sys.stdout.isatty() and "COLUMNS" not in os.environ and "width" not in kwargs:
        kwargs.update(width=UNBOUNDED, soft_wrap=True)
    return Console(**kwargs)
