"""Errors the command line reports as one line (no traceback), with exit status 2."""


class UserError(Exception):
    """Bad input or environment: a missing file, a malformed line, an unknown name."""
