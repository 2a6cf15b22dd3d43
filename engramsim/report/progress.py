"""A rich progress bar with ETA on stderr that appears only once work starts, so an error
found while checking the input stays one line."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class ProgressBar:
    def __init__(self, label: str, transient: bool = False):
        columns = (
            TextColumn(label),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
        )
        console = Console(stderr=True)
        # A transient bar on a pipe or a log would leave only a stray blank line: show none.
        self.progress = Progress(
            *columns, console=console, transient=transient, disable=transient and not console.is_terminal
        )
        self.task = None

    def update(self, done: int, total: int):
        if self.task is None:
            self.progress.start()
            self.task = self.progress.add_task("", total=total)
        self.progress.update(self.task, completed=done, total=total)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.task is not None:
            self.progress.stop()
