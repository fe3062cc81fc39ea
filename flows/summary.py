"""The markdown a person reads on a flow run's page: metrics, checkpoints, and where the MLflow run is."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from tasks.tracking import run_url, ui_command


def metrics_table(columns: Mapping[str, Mapping[str, float]]) -> str:
    """One row per metric, one column per source (e.g. validate, test); empty cells where absent."""
    names = sorted({name for values in columns.values() for name in values})
    header = "| metric | " + " | ".join(columns) + " |"
    rule = "|---|" + "---|" * len(columns)
    rows = [
        f"| {name} | " + " | ".join(_cell(values.get(name)) for values in columns.values()) + " |"
        for name in names
    ]
    return "\n".join([header, rule, *rows])


def _cell(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"


def mlflow_lines(tracking_uri: str, experiment_id: str, run_id: str) -> list[str]:
    """Where the MLflow run is, and the command that opens it when the store is local."""
    lines = [f"- MLflow run: [{run_id}]({run_url(tracking_uri, experiment_id, run_id)})"]
    command = ui_command(tracking_uri)
    if command:
        lines.append(f"- Open it with: `{command}`")
    return lines


def bullet_list(title: str, items: Sequence[str]) -> str:
    return "\n".join([f"**{title}**", "", *(f"- `{item}`" for item in items)])


__all__ = ["bullet_list", "metrics_table", "mlflow_lines"]
