"""Which series of a table were trained on, validated, backtested and forecast, and why any were left out.

Issue 20: a panel's short series are kept (left-padded windows, a split that gives up validation and test
where a series cannot afford them), so nothing is dropped silently: every count is written (metrics.json
"series", diagnosis.json, report.html) and printed, with up to ``MAX_NAMED`` series named per part.
Pure numpy over the per-series splits and the window starts; fast at a million series.

>>> from lstmcast.data.windows import Split
>>> c = series_counts(["a", "b"], [Split(1, 1, 1), Split(60, 24, 42)], 24, 18, np.array([24]),
...                   np.array([60]), np.array([0, 1, 61]))
>>> c["trained"]["count"], c["trained"]["left_out"][0]["id"]
(1, 'a')
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import short
from .windows import Split, min_train_points

MAX_NAMED = 5


def _points(n: int) -> str:
    return f"{n} point" + ("" if n == 1 else "s")


def _series_of(starts: np.ndarray, offsets: np.ndarray, n_series: int) -> np.ndarray:
    """(S,) bool: which series own at least one of the window starts (global rows of the concatenated tensor)."""
    hit = np.zeros(n_series, dtype=bool)
    if len(starts):
        hit[np.searchsorted(offsets, starts, side="right") - 1] = True
    return hit


def _part(ids: list[str], done: np.ndarray, reason: Any, extra: dict[str, int] | None = None) -> dict[str, Any]:
    """{count, left_out_count, left_out: [{id, reason}] (the first MAX_NAMED)} for one part."""
    out = np.flatnonzero(~done)
    return {"count": int(done.sum()), **(extra or {}), "left_out_count": int(len(out)),
            "left_out": [{"id": str(ids[i]), "reason": reason(int(i))} for i in out[:MAX_NAMED].tolist()]}


def series_counts(ids: list[str], splits: list[Split], window: int, horizon: int, train_starts: np.ndarray,
                  val_starts: np.ndarray, offsets: np.ndarray, pads: list[int] | None = None) -> dict[str, Any]:
    """The "series" record of a fitted table: trained, validated and forecast counts, with reasons."""
    S, H = len(ids), horizon
    n = np.array([sp.n for sp in splits], dtype=np.int64)
    trained = _series_of(train_starts, offsets, S)
    validated = _series_of(val_starts, offsets, S)
    need = min_train_points(H)

    def why_not_trained(i: int) -> str:
        if splits[i].train_end < need:
            return f"{_points(int(n[i]))}: fewer than horizon + 1 = {need}, too few for one training window"
        return "missing values break every training window (data.missing: drop-windows)"

    def why_not_validated(i: int) -> str:
        sp = splits[i]
        if sp.val_end == sp.train_end:
            return (f"{_points(int(n[i]))}: too short to hold out validation beside a training window "
                    "(it trains on them)")
        return "no complete validation window (missing values)"

    padded = int(sum(1 for p in pads or [] if p))
    short_forecast = int((n < window).sum())
    forecast = {"count": S, "from_padded_window": short_forecast, "never_trained": int((~trained).sum())}
    return {"total": S,
            "trained": _part(ids, trained, why_not_trained, {"on_padded_windows": padded}),
            "validated": _part(ids, validated, why_not_validated),
            "forecast": forecast}


def backtested(ids: list[str], splits: list[Split], series_idx: np.ndarray, need: int) -> dict[str, Any]:
    """The backtest's part of the record: ``series_idx`` the series of each origin; ``need`` the history an
    origin needs before it (the season, or the window without padding)."""
    done = np.zeros(len(ids), dtype=bool)
    done[np.unique(series_idx)] = True

    def why(i: int) -> str:
        sp = splits[i]
        if sp.val_end >= sp.n:
            return f"{_points(sp.n)}: too short to hold out a test part (all of them train)"
        return f"fewer than {need} points of history before its test part (data.season / data.window)"

    return _part(ids, done, why)


def summary_lines(counts: dict[str, Any]) -> list[str]:
    """What the CLI prints: one line per part with the series left out of it, if any."""
    if not counts:
        return []
    S = counts["total"]
    lines = []
    for part in ("trained", "validated", "backtested"):
        c = counts.get(part)
        if c is None:
            continue
        extra = f" ({c['on_padded_windows']:,} on left-padded windows)" if c.get("on_padded_windows") else ""
        line = f"series {part}: {c['count']:,} of {S:,}{extra}"
        if c["left_out_count"]:
            named = "; ".join(f"{short(x['id'])}: {x['reason']}" for x in c["left_out"])
            hidden = c["left_out_count"] - len(c["left_out"])
            more = f" and {hidden:,} more" if hidden > 0 else ""
            line += f"; left out {c['left_out_count']:,}: {named}{more}"
        lines.append(line)
    f = counts.get("forecast")
    if f is not None:
        line = f"series forecast: {f['count']:,} of {S:,}"
        notes = []
        if f["from_padded_window"]:
            notes.append(f"{f['from_padded_window']:,} shorter than the window, from a left-padded window")
        if f["never_trained"]:
            notes.append(f"{f['never_trained']:,} with no training window of their own, by the global model")
        lines.append(line + (f" ({'; '.join(notes)})" if notes else ""))
    return lines
