"""Helpers shared by several commands: repeated flags, terminal output."""

from __future__ import annotations

import click

from engramsim.errors import UserError


def executor_option(what: str):
    """--executor of the commands that run many simulations (sweep, plan)."""
    from engramsim.sweep.executors import EXECUTORS

    return click.option(
        "--executor",
        type=click.Choice(EXECUTORS),
        default="local",
        show_default=True,
        help=f"Run {what} in local processes or as Ray tasks.",
    )


def no_repeats(flag: str, values) -> None:
    """A repeatable flag given the same value twice is an error (it would run one case twice)."""
    values = list(values)
    repeated = next((v for i, v in enumerate(values) if v in values[:i]), None)
    if repeated is not None:
        shown = f"{repeated:g}" if isinstance(repeated, float) else str(repeated)
        raise UserError(f"{flag} {shown} is given twice")


class Progress:
    """A spinner with the current step on stderr (silent for --json)."""

    def __init__(self, console, enabled: bool):
        self.console, self.enabled, self.status = console, enabled, None

    def __enter__(self):
        if self.enabled:
            self.status = self.console.status("")
            self.status.start()
        return self.update

    def update(self, message: str) -> None:
        if self.status:
            self.status.update(message)

    def __exit__(self, *exc):
        if self.status:
            self.status.stop()


def print_notes(lines, prefix: str, style: str = "") -> None:
    """One line per note on stderr, never wrapped (a model's config notes, the flags understood)."""
    from rich.console import Console

    err = Console(stderr=True)
    for line in lines:
        err.print(f"{prefix}: {line}", style=style, highlight=False, markup=False, soft_wrap=True)
