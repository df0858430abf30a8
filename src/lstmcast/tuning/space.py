"""The search space of `lstmcast tune`, resolved from the config's ``tune:`` section and the data.

The space follows the guide: ``hidden_size`` log-uniform around the 2-4x-input-features rule widened
by ``tune.hidden_factor``; ``num_layers`` 1-4; ``dropout`` drawn ONLY where ``num_layers > 1``
(LSTM dropout acts between layers, so the space is conditional); ``lr`` log-uniform; ``window`` a
few seasonal periods (capped to what the shortest training split holds); ``batch_size`` multiples
of 8; ``bidirectional`` and ``residual`` on/off. Every range is overridable under ``tune:``.

>>> from lstmcast.config import TuneConfig
>>> space = resolve_space(TuneConfig(), n_features=1, season=52, horizon=52, longest_window=400)
>>> space.hidden_size, space.window, space.window_step
((4, 32), (52, 208), 52)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from lstmcast.config import validate_config
from lstmcast.data.prepare import is_panel, season_from_freq, series_splits
from lstmcast.errors import ConfigError, DataError

if TYPE_CHECKING:
    import optuna

    from lstmcast.config import ForecastConfig, TuneConfig
    from lstmcast.data.validate import SeriesSet


@dataclass(frozen=True)
class SearchSpace:
    hidden_size: tuple[int, int]
    num_layers: tuple[int, int]
    dropout: tuple[float, float]
    lr: tuple[float, float]
    window: tuple[int, int]
    window_step: int
    batch_size: tuple[int, ...]
    bidirectional: tuple[bool, ...]
    residual: tuple[bool, ...]

    def as_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def rows(self) -> list[tuple[str, str, str]]:
        """(parameter, distribution, note) for printing before the first trial."""
        lo, hi = self.window
        return [
            ("hidden_size", f"int log-uniform [{self.hidden_size[0]}, {self.hidden_size[1]}]",
             "around 2-4x input features (tune.hidden_factor)"),
            ("num_layers", f"int [{self.num_layers[0]}, {self.num_layers[1]}]", ""),
            ("dropout", f"float [{self.dropout[0]:g}, {self.dropout[1]:g}]", "only where num_layers > 1"),
            ("lr", f"float log-uniform [{self.lr[0]:g}, {self.lr[1]:g}]", ""),
            ("window", f"int [{lo}, {hi}] step {self.window_step}", "lookback L"),
            ("batch_size", "one of " + ", ".join(map(str, self.batch_size)), ""),
            ("bidirectional", "one of " + ", ".join(map(str, self.bidirectional)), ""),
            ("residual", "one of " + ", ".join(map(str, self.residual)), ""),
        ]


def _range_problems(t: TuneConfig) -> list[str]:
    problems = []
    ranges = {"num_layers": t.num_layers, "dropout": t.dropout, "lr": t.lr, "window_periods": t.window_periods}
    if t.hidden_size is not None:
        ranges["hidden_size"] = t.hidden_size
    if t.window is not None:
        ranges["window"] = t.window
    for name, (lo, hi) in ranges.items():
        if lo > hi:
            problems.append(f"tune.{name}: low {lo} is above high {hi}: write it as [low, high]")
    lower = {"num_layers": (t.num_layers[0], 1), "window_periods": (t.window_periods[0], 1),
             "hidden_size": ((t.hidden_size or (1, 1))[0], 1), "window": ((t.window or (2, 2))[0], 2)}
    for name, (value, least) in lower.items():
        if value < least:
            problems.append(f"tune.{name} must start at >= {least}, got {value}")
    if t.num_layers[1] > 16:
        problems.append(f"tune.num_layers goes up to {t.num_layers[1]}: model.num_layers allows 16 at most")
    if not (0.0 <= t.dropout[0] and t.dropout[1] < 1.0):
        problems.append(f"tune.dropout must lie in [0, 1), got {list(t.dropout)}")
    if t.lr[0] <= 0 or t.lr[1] > 1.0:
        problems.append(f"tune.lr must lie in (0, 1] (it is log-uniform), got {list(t.lr)}")
    for name in ("batch_size", "bidirectional", "residual"):
        if not getattr(t, name):
            problems.append(f"tune.{name} is an empty list: give at least one choice")
    if any(b < 1 for b in t.batch_size):
        problems.append(f"tune.batch_size choices must be >= 1, got {t.batch_size}")
    return problems


def _window_range(t: TuneConfig, season: int | None, horizon: int, longest: int) -> tuple[int, int, int]:
    if t.window is not None:
        lo, hi, step = t.window[0], t.window[1], 1
        where = f"tune.window {list(t.window)}"
    else:
        step = season if season and season > 1 else max(horizon, 8)
        lo, hi = t.window_periods[0] * step, t.window_periods[1] * step
        unit = f"seasonal periods of {step}" if season and season > 1 else f"units of {step} (no season known)"
        where = f"tune.window_periods {list(t.window_periods)} ({unit})"
    if lo > longest:
        raise DataError(f"{where} asks for windows of at least {lo} but the shortest training split holds "
                        f"windows up to {longest} (a quarter of it is kept for window starts): lower "
                        "tune.window_periods or set tune.window: [low, high], or use more data")
    hi = lo + (min(hi, longest) - lo) // step * step
    return lo, hi, step


def resolve_space(t: TuneConfig, n_features: int, season: int | None, horizon: int,
                  longest_window: int) -> SearchSpace:
    """The concrete space for data with ``n_features`` input channels (ConfigError lists every problem)."""
    problems = _range_problems(t)
    if problems:
        raise ConfigError(problems)
    if t.hidden_size is not None:
        hidden = (t.hidden_size[0], t.hidden_size[1])
    else:
        lo = max(4, math.ceil(2 * n_features / t.hidden_factor))
        hidden = (lo, max(2 * lo, 16, math.floor(4 * n_features * t.hidden_factor)))
    w_lo, w_hi, step = _window_range(t, season, horizon, longest_window)
    return SearchSpace(hidden_size=hidden, num_layers=(t.num_layers[0], t.num_layers[1]),
                       dropout=(t.dropout[0], t.dropout[1]), lr=(t.lr[0], t.lr[1]), window=(w_lo, w_hi),
                       window_step=step, batch_size=tuple(t.batch_size), bidirectional=tuple(t.bidirectional),
                       residual=tuple(t.residual))


def space_for(cfg: ForecastConfig, series: SeriesSet) -> SearchSpace:
    """Resolve the space for validated ``series``: F from its channels, season and split as training does."""
    d = cfg.data
    season = d.season if d.season is not None else season_from_freq(series.freq)
    panel = is_panel(series.layout, len(series.ids))
    ends = [sp.train_end for sp in series_splits(series.lengths(), d, panel)]
    if panel:  # a table: short series train on padded windows; size from the median one
        trainable = sorted(e for e in ends if e > d.horizon) or [max(ends)]
        ends = [trainable[len(trainable) // 2]]
    shortest = min(ends)
    longest_window = shortest - d.horizon - max(1, shortest // 4)  # the same margin as the automatic window
    return resolve_space(cfg.tune, len(series.channel_names), season, d.horizon, longest_window)


def suggest(trial: optuna.Trial, space: SearchSpace) -> dict[str, Any]:
    """Draw one configuration; ``dropout`` exists only where ``num_layers > 1`` (conditional space)."""
    p: dict[str, Any] = {
        "hidden_size": trial.suggest_int("hidden_size", *space.hidden_size, log=True),
        "num_layers": trial.suggest_int("num_layers", *space.num_layers),
    }
    if p["num_layers"] > 1:
        p["dropout"] = trial.suggest_float("dropout", *space.dropout)
    p["lr"] = trial.suggest_float("lr", *space.lr, log=True)
    p["window"] = trial.suggest_int("window", *space.window, step=space.window_step)
    p["batch_size"] = trial.suggest_categorical("batch_size", list(space.batch_size))
    p["bidirectional"] = trial.suggest_categorical("bidirectional", list(space.bidirectional))
    p["residual"] = trial.suggest_categorical("residual", list(space.residual))
    return p


def apply_params(base: ForecastConfig, params: dict[str, Any], max_epochs: int | None = None,
                 threads: int | None = None) -> ForecastConfig:
    """``base`` with a trial's parameters; ``max_epochs``/``threads`` set only for trials, not best.yaml."""
    raw = base.to_dict()
    raw["model"].update(hidden_size=params["hidden_size"], num_layers=params["num_layers"],
                        dropout=params.get("dropout", 0.0) if params["num_layers"] > 1 else 0.0,
                        bidirectional=params["bidirectional"], residual=params["residual"])
    raw["train"].update(lr=params["lr"], batch_size=params["batch_size"])
    if max_epochs is not None:
        raw["train"]["max_epochs"] = max_epochs
    if threads is not None:
        raw["train"]["threads"] = threads
    raw["data"]["window"] = params["window"]
    return validate_config(raw)
