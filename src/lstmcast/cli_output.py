"""What the `lstmcast` commands print: metric tables, the summary after training, tuning progress.

The library logs, the CLI prints (STYLE rule 10): cli.py parses and calls, this module renders.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer


def metrics_table(metrics: dict[str, dict[str, float]], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    from lstmcast.inference.backtest import methods

    rows = methods(metrics)  # several series: MAE/RMSE are pooled, per-series metrics in metrics.json (H16)
    every = list(dict.fromkeys(k for row in rows.values() for k in row))
    interval = [k for k in every if k == "pinball" or k.split("_")[0] in ("coverage", "width", "interval")]
    point = [k for k in every if k not in interval]
    for names, heading in ((point, title), (interval, "prediction intervals (width and scores scaled like MASE)")):
        if not names:
            continue
        table = Table(title=heading)
        table.add_column("method")
        for name in names:
            table.add_column(name, justify="right")
        for method, row in rows.items():
            if any(k in row for k in names):
                table.add_row(method, *(f"{row[k]:.4g}" if k in row else "" for k in names))
        Console().print(table)

def print_trained(fc: Any, metrics: dict[str, Any], run_dir: Path) -> None:
    res = getattr(fc, "fit_result_", None)  # None: a saved model whose outputs `--resume` just finished
    if res is not None:
        typer.echo(f"trained {fc.meta_.n_parameters:,} parameters for {len(fc.history_)} epochs "
                   f"(best epoch {res.best_epoch}, {res.stop_reason})")
    refit = getattr(fc, "refit_", None) or getattr(getattr(fc, "meta_", None), "refit", None)
    if refit:
        typer.echo(f"final model: refitted on all {refit['rows']:,} rows for {refit['steps']} steps "
                   "(train.refit); the backtest below is the first model's, which never saw the test split")
    diagnosis = getattr(fc, "diagnosis_", None)
    if diagnosis is not None and diagnosis.verdict == "loses-to-baseline":  # said first, before the table
        typer.echo(f"WARNING: {diagnosis.findings[0].message}")
    metrics_table(metrics, f"backtest on the test split ({len(fc.backtest_.origins)} origins, "
                            f"horizon {fc.meta_.horizon})")
    if metrics.get("series"):  # a table: how many series trained, validated, backtested, forecast (issue 20)
        from lstmcast.data.coverage import summary_lines

        typer.echo("\n".join(summary_lines(metrics["series"])))
    if getattr(fc, "diagnosis_", None) is not None:
        typer.echo("\n".join(fc.diagnosis_.lines()))
    if (run_dir / "report.html").is_file():
        typer.echo(f"report: {run_dir / 'report.html'}")
    if fc.config_.monitor.tensorboard and (run_dir / "tb").is_dir():
        typer.echo(f"tensorboard: tensorboard --logdir {run_dir / 'tb'}")
    if getattr(getattr(fc, "meta_", None), "future_features", None):
        typer.echo(f"forecast: the model needs the known-future covariates {fc.meta_.future_features} over the horizon:"
                   f" lstmcast predict {run_dir} --future NEXT.csv")
    typer.echo(f"run folder: {run_dir}")

def print_space(space: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="search space (override under tune: in the config)")
    for col in ("parameter", "distribution", "note"):
        table.add_column(col)
    for row in space.rows():
        table.add_row(*row)
    Console().print(table)

def print_trial(outcome: Any) -> None:
    value = f" value {outcome.value:.5g}" if outcome.value is not None else ""
    p = outcome.params
    typer.echo(f"trial {outcome.number}: {outcome.state}{value} after {outcome.attrs.get('epochs', 0)} epochs "
               f"({outcome.attrs.get('seconds', 0):.1f}s)  hidden {p['hidden_size']}x{p['num_layers']} "
               f"lr {p['lr']:.2g} window {p['window']} batch {p['batch_size']}")

def print_best(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    cols = {"trial": "#", "value": summary["objective"], "epochs": "epochs", "hidden_size": "hidden",
            "num_layers": "layers", "dropout": "dropout", "lr": "lr", "window": "window", "batch_size": "batch",
            "bidirectional": "bidir", "residual": "resid"}
    table = Table(title=f"best trials ({summary['trials']} trials: "
                        + ", ".join(f"{n} {s}" for s, n in summary["states"].items()) + ")")
    for head in cols.values():
        table.add_column(head, justify="right", no_wrap=True)
    for r in summary["best_trials"]:
        table.add_row(*(f"{r[c]:.3g}" if isinstance(r[c], float) else str(r[c]) for c in cols))
    console = Console()
    if not console.is_terminal:
        console.width = max(console.width, 120)  # logs and pipes: no need to squeeze the columns
    console.print(table)
    if summary["importances"]:
        typer.echo("parameter importances: " + ", ".join(f"{k} {v:.2f}" for k, v in summary["importances"].items()))
    if summary.get("importance_note"):
        typer.echo(f"  ({summary['importance_note']})")
