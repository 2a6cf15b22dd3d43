"""The one exception type that the CLI turns into a single-line error and a non-zero exit."""


class UserError(Exception):
    """Bad input: an unknown preset, a malformed file, an impossible configuration."""
