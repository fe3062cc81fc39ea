"""RichModelSummary: the model summary printed as a rich table (rich is optional, imported when used).

Like :class:`ModelSummary` here, the table has no FLOPs column (see ``model_summary``'s docstring).
"""

from __future__ import annotations

from typing import Any

from lightning_lib.callbacks.model_summary import ModelSummary, get_human_readable_count
from lightning_lib.callbacks.progress.rich_progress import _rich_available

_RICH_AVAILABLE = _rich_available()

_RIGHT_ALIGNED = {"Params", "Params per Device"}


class RichModelSummary(ModelSummary):
    """Print the layer summary as a rich table when fitting starts.

    Args:
        max_depth: nesting depth of the layers listed; 0 turns the summary off.
        **summarize_kwargs: ``header_style`` (rich style of the header row, ``"bold magenta"``).
    """

    def __init__(self, max_depth: int = 1, **summarize_kwargs: Any) -> None:
        if not (_RICH_AVAILABLE and _rich_available()):
            raise ModuleNotFoundError(
                "`RichModelSummary` requires `rich` to be installed. Install it by running"
                " `pip install lightning-lib[rich]` (or `pip install -U rich`)."
            )
        super().__init__(max_depth, **summarize_kwargs)

    @staticmethod
    def summarize(
        summary_data: list[tuple[str, list[str]]],
        total_parameters: int,
        trainable_parameters: int,
        model_size: float,
        total_training_modes: dict[str, int],
        **summarize_kwargs: Any,
    ) -> None:
        """Print the table and the totals to rich's console."""
        from rich import get_console
        from rich.table import Table

        console = get_console()
        table = Table(header_style=summarize_kwargs.get("header_style", "bold magenta"))
        for header, _ in summary_data:
            if header == " ":
                table.add_column(header, style="dim")
            elif header == "Name":
                table.add_column(header, justify="left", no_wrap=True)
            elif header in _RIGHT_ALIGNED:
                table.add_column(header, justify="right")
            elif header in ("In sizes", "Out sizes"):
                table.add_column(header, justify="right", style="white")
            else:
                table.add_column(header)
        for row in zip(*(cells for _, cells in summary_data)):
            table.add_row(*row)
        console.print(table)

        def padded(value: str) -> str:
            return f"{value:<10}"

        grid = Table.grid(expand=True)
        grid.add_column()
        grid.add_column()
        for label, value in (
            ("Trainable params", padded(get_human_readable_count(trainable_parameters))),
            (
                "Non-trainable params",
                padded(get_human_readable_count(total_parameters - trainable_parameters)),
            ),
            ("Total params", padded(get_human_readable_count(total_parameters))),
            ("Total estimated model params size (MB)", padded(f"{model_size:,.3f}")),
            ("Modules in train mode", str(total_training_modes["train"])),
            ("Modules in eval mode", str(total_training_modes["eval"])),
        ):
            grid.add_row(f"[bold]{label}[/]: {value}")
        console.print(grid)
