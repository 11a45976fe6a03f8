"""What the long-running commands share on the terminal: one stderr console and one kind of progress bar.

Not a command group: `replay`, `import` and `ledger` use it, so their output looks alike and stdout stays
free for what a script would read.
"""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

console = Console(stderr=True)


class RateColumn(ProgressColumn):
    """Items per second, e.g. ``1,204 events/s``, with `decimals` after the point."""

    def __init__(self, unit: str, decimals: int = 0) -> None:
        super().__init__()
        self.unit = unit
        self.decimals = decimals

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        shown = f"{speed:,.{self.decimals}f}" if speed else "-"
        return Text(f"{shown} {self.unit}/s", style="progress.data.speed")


def progress_bar(unit: str, decimals: int = 0) -> Progress:
    """A bar with the count done of the total, the rate in `unit` per second, the ETA and the time taken."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(unit, decimals),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        TimeElapsedColumn(),
        console=console,
    )
