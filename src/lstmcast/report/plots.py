"""PNG plots of a run: learning curves and the forecast with its backtest windows."""

from __future__ import annotations

import io
import math
import os
from typing import TYPE_CHECKING, Any

from lstmcast import atomic

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from lstmcast.data.validate import SeriesSet
    from lstmcast.inference.backtest import Backtest
    from lstmcast.run.meta import RunMeta


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


def _save(fig: Figure, path: str | os.PathLike[str]) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    atomic.write_bytes(path, buf.getvalue())


def readable_log_y(ax: Axes, values: Any) -> None:
    """A log y axis only where the values span a decade or more, labelled at the in-between ticks too
    (a plain log axis over less than two decades shows one or two labels)."""
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
    """Per series, left: the history from before the first backtest origin (at least the last
    ``history_points``), the backtest forecasts and the forecast; right: the forecast and its intervals on the
    last few windows, so the fan chart is readable. ``total``: the run's series count when ``series`` holds
    only some of them (data.shard_series: rank 0's own). An empty ``forecast`` (known-future covariates not
    given yet) draws and lists no forecast."""
    plt = _pyplot()
    n = min(max_series, len(series.ids))
    fig, axes = plt.subplots(n, 2, figsize=(13, 3.4 * n), squeeze=False, gridspec_kw={"width_ratios": [3, 1.3]})
    target = meta.targets[0]
    levels = (meta.intervals or {}).get("levels") or []
    for i in range(n):
        ax, zoom = axes[i]
        sid, times, vals = series.ids[i], series.times[i], series.values[i][:, 0]
        name = sid if meta.layout == "wide" else target
        part = forecast[forecast[meta.id_col].astype(str) == sid] if meta.layout == "long" else forecast
        mine = [k for k in range(len(bt.origins)) if bt.series_idx[k] == i] if bt is not None else []
        start = len(times) - history_points
        if mine:  # the backtest forecasts start at their first origin: show the history before it too
            start = min(start, int(min(bt.origins[k] for k in mine)) - meta.horizon)  # type: ignore[union-attr]
        start = max(0, start)
        ax.plot(times[start:], vals[start:], color="black", lw=1, label="history")
        for j, k in enumerate(mine):
            t = bt.origins[k]  # type: ignore[union-attr]
            span = times[t:t + meta.horizon]
            model_fc = bt.forecasts["model"][k, :len(span), 0]  # type: ignore[union-attr]
            ax.plot(span, model_fc, color="tab:orange", lw=1, alpha=0.8, label="backtest forecasts" if j == 0 else None)
        recent = max(meta.window, 3 * meta.horizon)
        zoom.plot(times[-recent:], vals[-recent:], color="black", lw=1, label="history")
        if len(part):
            ftimes, fvals = part[meta.time_col].to_numpy(), part[name].to_numpy()
            for target_ax in (ax, zoom):
                _fan(target_ax, part, name, ftimes, levels if target_ax is zoom else [])
                target_ax.plot(ftimes, fvals, color="tab:blue", lw=2, label="forecast")
        else:
            zoom.text(0.5, 0.5, "no forecast yet: the model needs its\nknown-future covariates over the horizon\n"
                      "(lstmcast predict RUN --future NEXT.csv)", transform=zoom.transAxes, ha="center",
                      va="center", fontsize=8, color="#555")
        title = f"series {plot_text(sid)}" if sid else plot_text(target)
        ax.set_title(f"{title}: history, backtest forecasts and forecast")
        zoom.set_title(f"{title}: the forecast" + (" and its intervals" if levels and len(part) else ""))
        for a in (ax, zoom):
            a.set_ylabel(plot_text(name))
            a.legend(loc="upper left", fontsize=8)
            a.tick_params(axis="x", labelrotation=30, labelsize=8)
    held = len(series.ids)
    total = held if total is None else total
    if total > 1:  # never let a long table look like a short one (H16)
        which = "the first ones" if held == total else "the first of rank 0's own"
        shown = f"{n} of {total} series shown" + (f" ({which}; every series' backtest is in backtest.csv)"
                                                  if n < total else "")
        fig.suptitle(shown, y=1.0)
    fig.tight_layout()
    _save(fig, path)


def _fan(ax: Axes, part: pd.DataFrame, name: str, times: Any, levels: list[int]) -> None:
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
    markers = ["o", "s", "^", "D"]  # with the dash style, a layer reads apart in the legend (dashes alone did not)
    colors = {"input": "tab:blue", "forget": "tab:red", "cell": "tab:green", "output": "tab:purple"}
    top = 0.0
    for k in range(n_layers):
        rows = [p["layers"][k] for p in probes]
        ls, mk = styles[k % len(styles)], markers[k % len(markers)]
        style = {"ls": ls, "marker": mk, "markersize": 4, "fillstyle": "full" if k % 2 == 0 else "none"}
        for gate, color in colors.items():
            label = f"{gate} (layer {k + 1})" if n_layers > 1 else gate
            axes[0].plot(epochs, [r["gate_mean"][gate] for r in rows], color=color, label=label, **style)
            saturated = [r["gate_saturated"][gate] for r in rows]
            top = max(top, max(saturated, default=0.0))
            axes[1].plot(epochs, saturated, color=color, **style)
        axes[2].plot(epochs, [r["dead_units"] / max(1, r["units"]) for r in rows], color="black",
                     label=f"dead units, layer {k + 1}", **style)
        axes[2].plot(epochs, [r["h_abs_mean"] for r in rows], color="tab:orange", label=f"mean |h_n|, layer {k + 1}",
                     **style)
    axes[0].set_title("Gate activation means")
    axes[1].set_title("Saturated fraction (< 0.05 or > 0.95)")
    axes[2].set_title("Dead units and hidden-state size")
    from matplotlib.ticker import MaxNLocator, PercentFormatter

    for ax in axes:
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    # scaled to what was seen (a 0..1 axis drew a few percent as a flat zero); none at all is said in words
    axes[1].set_ylim(-0.02 * max(top, 0.05), 1.1 * max(top, 0.05))
    axes[1].yaxis.set_major_formatter(PercentFormatter(1.0))
    if top == 0:
        axes[1].text(0.5, 0.5, "no gate saturated in any probe", transform=axes[1].transAxes, ha="center",
                     va="center", fontsize=9, color="#555")
    axes[0].legend(fontsize=7, ncol=2 if n_layers > 1 else 1)
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    _save(fig, path)
