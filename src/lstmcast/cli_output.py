"""What the `lstmcast` commands print: metric tables, the summary after training, tuning progress.

The library logs, the CLI prints (STYLE rule 10): cli.py parses and calls, this module renders.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from lstmcast.forecaster import Forecaster


def metrics_table(metrics: dict[str, dict[str, float]], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    from lstmcast.inference.backtest import methods

    rows = methods(metrics)  # several series: MAE/RMSE are pooled, per-series metrics in metrics.json (H16)
    every = list(dict.fromkeys(k for row in rows.values() for k in row))
    interval = [k for k in every if k == "pinball" or k.split("_")[0] in ("coverage", "width", "interval")]
    point = [k for k in every if k not in interval]
    if point:
        table = Table(title=title)
        table.add_column("method")
        for name in point:
            table.add_column("sMAPE %" if name == "sMAPE" else name, justify="right")
        for method, row in rows.items():
            if any(k in row for k in point):
                table.add_row(method, *(f"{row[k]:.4g}" if k in row else "" for k in point))
        Console().print(table)
    if interval:  # one row per score, one column per method: fits an 80-column terminal (names were cut)
        shown = [m for m, row in rows.items() if any(k in row for k in interval)]
        table = Table(title="prediction intervals (width and scores scaled like MASE)")
        table.add_column("score", no_wrap=True)
        for method in shown:
            table.add_column(method, justify="right")
        for name in interval:
            table.add_row(name, *(f"{rows[m][name]:.4g}" if name in rows[m] else "" for m in shown))
        Console().print(table)

def print_trained(fc: Forecaster, metrics: dict[str, Any], run_dir: Path) -> None:
    if fc.training_ is not None:  # None: a saved model whose outputs `--resume` just finished
        res = fc.training_.result
        typer.echo(f"trained {fc.meta_.n_parameters:,} parameters for {len(fc.history_)} epochs "
                   f"(best epoch {res.best_epoch}, {res.stop_reason})")
    refit = fc.meta_.refit
    if refit:
        typer.echo(f"final model: refitted on all {refit['rows']:,} rows for {refit['steps']} steps "
                   "(train.refit); the backtest below is the first model's, which never saw the test split")
    diagnosis = fc.diagnosis_
    if diagnosis is not None and diagnosis.verdict == "loses-to-baseline":  # said first, before the table
        typer.echo(f"WARNING: {diagnosis.findings[0].message}")
    origins = len(fc.backtest_.origins) if fc.backtest_ is not None else 0
    metrics_table(metrics, f"backtest on the test split ({origins} origins, "
                            f"horizon {fc.meta_.horizon})")
    if metrics.get("series"):  # a table: how many series trained, validated, backtested, forecast (issue 20)
        from lstmcast.data.coverage import summary_lines

        typer.echo("\n".join(summary_lines(metrics["series"])))
    local = fc.meta_.local
    if local is not None and local.weight > 0:
        typer.echo(f"forecasts: {1 - local.weight:.2f} x the model's + {local.weight:.2f} x each series' own Theta "
                   "forecast (model.local; model.local: none for the model alone), in the backtest too")
    if diagnosis is not None:
        typer.echo("\n".join(diagnosis.lines()))
    if (run_dir / "report.html").is_file():
        typer.echo(f"report: {run_dir / 'report.html'}")
    if fc.config_.monitor.tensorboard and (run_dir / "tb").is_dir():
        typer.echo(f"tensorboard: tensorboard --logdir {run_dir / 'tb'}")
    if fc.meta_.future_features:
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
    done = f"[{outcome.done} of {outcome.total}] " if outcome.total else ""
    eta = f"  eta ~{outcome.eta_s:.0f}s" if outcome.eta_s is not None and outcome.done < outcome.total else ""
    typer.echo(f"{done}trial {outcome.number}: {outcome.state}{value} after {outcome.attrs.get('epochs', 0)} epochs "
               f"({outcome.attrs.get('seconds', 0):.1f}s)  hidden {p['hidden_size']}x{p['num_layers']} "
               f"lr {p['lr']:.2g} window {p['window']} batch {p['batch_size']}{eta}")


def print_stop(summary: dict[str, Any], total: int, timeout: str | None) -> None:
    """Why the study ended: the timeout said aloud when it stopped the study short of its trials."""
    if summary.get("stopped_by") == "timeout":
        typer.echo(f"the timeout (--timeout {timeout}) stopped the study after {summary['trials']} of {total} trials "
                   "(no trial starts after it); rerun the same command to continue it")

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
