"""PNG plots of a run: learning curves and the forecast with its backtest windows."""

from __future__ import annotations

import io
import os
from typing import TYPE_CHECKING, Any

from lstmcast import atomic

if TYPE_CHECKING:
    from lstmcast.run.meta import RunMeta
    import pandas as pd

    from lstmcast.data.validate import SeriesSet
    from lstmcast.inference.backtest import Backtest


MAX_LABEL = 60  # characters of a series id or column name in a title: a 3,000-character id made a 30,000 px plot


def plot_text(text: object, limit: int = MAX_LABEL) -> str:
    """User text (series ids, column names) as a plot shows it: one line, cut to ``limit`` characters, and every
    ``$`` escaped, so matplotlib never reads "price $5 and $6" as mathtext ("price 5and6" in italics)."""
    flat = " ".join(str(text).split())
    if len(flat) > limit:
        flat = flat[:limit - 3] + "..."
    return flat.replace("$", r"\$")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | os.PathLike[str]) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    atomic.write_bytes(path, buf.getvalue())


def readable_log_y(ax: Any, values: Any) -> None:
    """A log y axis only where the values span a decade or more, labelled at the in-between ticks too
    (a plain log axis over less than two decades shows one or two labels)."""
    import math

    from matplotlib.ticker import LogFormatterSciNotation

    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not finite or min(finite) <= 0 or max(finite) / min(finite) < 10:
        return
    ax.set_yscale("log")
    ax.yaxis.set_minor_formatter(LogFormatterSciNotation(labelOnlyBase=False, minor_thresholds=(2, 0.5)))


def loss_plot(history: list[dict[str, Any]], path: str | os.PathLike[str], best_epoch: int | None = None) -> None:
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(7, 4))
    epochs = [h["epoch"] for h in history]
    ax.plot(epochs, [h["train_loss"] for h in history], label="train")
    ax.plot(epochs, [h["val_loss"] for h in history], label="validation")
    if best_epoch:
        ax.axvline(best_epoch, color="grey", ls="--", lw=1, label=f"best epoch {best_epoch}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (scaled units)")
    readable_log_y(ax, [h[k] for h in history for k in ("train_loss", "val_loss")])
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title("Learning curves")
    ax.legend()
    _save(fig, path)


def forecast_plot(series: SeriesSet, forecast: pd.DataFrame, meta: RunMeta, bt: Backtest | None,
                  path: str | os.PathLike[str], max_series: int = 4, history_points: int = 400,
                  total: int | None = None) -> None:
    """History, the future forecast, and the model's backtest forecasts against actuals. ``total``: the run's
    series count when ``series`` holds only some of them (data.shard_series: rank 0's own)."""
    plt = _pyplot()
    n = min(max_series, len(series.ids))
    fig, axes = plt.subplots(n, 1, figsize=(10, 3.2 * n), squeeze=False)
    target = meta.targets[0]
    for i in range(n):
        ax = axes[i][0]
        sid, times, vals = series.ids[i], series.times[i], series.values[i][:, 0]
        ax.plot(times[-history_points:], vals[-history_points:], color="black", lw=1, label="history")
        name = sid if meta.layout == "wide" else target
        part = forecast[forecast[meta.id_col].astype(str) == sid] if meta.layout == "long" else forecast
        fvals = part[name].to_numpy()
        ftimes = part[meta.time_col].to_numpy()
        _fan(ax, part, name, ftimes, (meta.intervals or {}).get("levels") or [])
        ax.plot(ftimes, fvals, color="tab:blue", lw=2, label="forecast")
        if bt is not None:
            first = True
            for k in range(len(bt.origins)):
                if bt.series_idx[k] != i:
                    continue
                t = bt.origins[k]
                span = times[t:t + meta.horizon]
                ax.plot(span, bt.forecasts["model"][k, :len(span), 0], color="tab:orange", lw=1, alpha=0.8,
                        label="backtest forecasts" if first else None)
                first = False
        title = f"series {plot_text(sid)}" if sid else plot_text(target)
        ax.set_title(f"{title}: history, forecast and backtest")
        ax.legend(loc="upper left", fontsize=8)
    held = len(series.ids)
    total = held if total is None else total
    if total > 1:  # never let a long table look like a short one (H16)
        which = "the first ones" if held == total else "the first of rank 0's own"
        shown = f"{n} of {total} series shown" + (f" ({which}; every series' backtest is in backtest.csv)"
                                                  if n < total else "")
        fig.suptitle(shown, y=1.0)
    fig.autofmt_xdate()
    _save(fig, path)


def _fan(ax: Any, part: pd.DataFrame, name: str, times: Any, levels: list[int]) -> None:
    """A fan chart: each level's interval shaded, the widest lightest."""
    for L in sorted(levels, reverse=True):
        lo, hi = f"{name}_lo_{L}", f"{name}_hi_{L}"
        if lo in part and hi in part:
            ax.fill_between(times, part[lo].to_numpy(), part[hi].to_numpy(), color="tab:blue",
                            alpha=0.12 + 0.5 * (100 - L) / 100, lw=0, label=f"{L}% interval")


def probe_plot(probes: list[dict[str, Any]], path: str | os.PathLike[str]) -> None:
    """Gate activations, saturation and dead units per LSTM layer over the probed epochs (monitor.json)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    epochs = [p["epoch"] for p in probes]
    n_layers = max((len(p["layers"]) for p in probes), default=0)
    styles = ["-", "--", ":", "-."]
    colors = {"input": "tab:blue", "forget": "tab:red", "cell": "tab:green", "output": "tab:purple"}
    for k in range(n_layers):
        rows = [p["layers"][k] for p in probes]
        ls = styles[k % len(styles)]
        for gate, color in colors.items():
            label = f"{gate} (layer {k + 1})" if n_layers > 1 else gate
            axes[0].plot(epochs, [r["gate_mean"][gate] for r in rows], ls=ls, color=color, marker=".", label=label)
            axes[1].plot(epochs, [r["gate_saturated"][gate] for r in rows], ls=ls, color=color, marker=".")
        axes[2].plot(epochs, [r["dead_units"] / max(1, r["units"]) for r in rows], ls=ls, color="black",
                     marker=".", label=f"dead units, layer {k + 1}")
        axes[2].plot(epochs, [r["h_abs_mean"] for r in rows], ls=ls, color="tab:orange", marker=".",
                     label=f"mean |h_n|, layer {k + 1}")
    axes[0].set_title("Gate activation means")
    axes[1].set_title("Saturated fraction (< 0.05 or > 0.95)")
    axes[2].set_title("Dead units and hidden-state size")
    from matplotlib.ticker import MaxNLocator

    for ax in axes:
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[1].set_ylim(-0.02, 1.02)
    axes[0].legend(fontsize=7, ncol=2 if n_layers > 1 else 1)
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    _save(fig, path)
