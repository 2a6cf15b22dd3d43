"""The exception types that the CLI turns into a single line on stderr and a non-zero exit."""


class UserError(Exception):
    """Bad input: an unknown preset, a malformed file, an impossible configuration (exit 2)."""


class Interrupted(Exception):
    """Ctrl-C, after whatever could be kept was kept; the message says what (exit 130)."""
