"""The options the `lstmcast` commands share, and the config they build from a file, the flags and --set.

Imports nothing heavy at module level (typer only), so `lstmcast --help` stays fast.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from lstmcast.errors import ConfigError

DataOpt = typer.Option(None, "--data", help="CSV or Parquet file (default: the bundled CO2 demo series).")
TimeOpt = typer.Option(None, "--time-col", help="Timestamp column.")
TargetOpt = typer.Option(None, "--target", help="Target column(s), comma-separated.")
FeatOpt = typer.Option(None, "--features", help="Past-covariate columns, comma-separated.")
IdOpt = typer.Option(None, "--id-col", help="Series id column (long format).")
WindowOpt = typer.Option(None, "--window", help="Lookback window L (default: from the season and horizon).")
HorizonOpt = typer.Option(None, "--horizon", help="Forecast horizon H.")
SeasonOpt = typer.Option(None, "--season", help="Seasonal period in steps (default: from the frequency).")
ConfigOpt = typer.Option(None, "-c", "--config", help="YAML config file.")
SetOpt = typer.Option(None, "--set", help="Dotted override, e.g. --set model.hidden_size=128 (repeatable).")
FutureOpt = typer.Option(None, "--future-features", help="Known-future covariate columns, comma-separated (needed "
                         "again at predict: --future).")
StaticOpt = typer.Option(None, "--static-features", help="Per-series constant columns, comma-separated (long "
                         "tables).")


LevelsOpt = typer.Option(None, "--levels", help="Prediction intervals at these coverage levels in percent, "
                         "comma-separated, e.g. 80,95 (model.levels).")
MissingOpt = typer.Option(None, "--missing", help="Missing values and gaps: error (default), interpolate, ffill or "
                          "drop-windows (data.missing).")


def with_flags(levels: str | None, missing: str | None, overrides: list[str]) -> list[str]:
    """--levels / --missing as the --set overrides they stand for (--set comes after: it wins)."""
    flags = [f"model.levels=[{levels}]"] if levels else []
    return flags + ([f"data.missing={missing}"] if missing else []) + overrides


def with_roles(future_features: str | None, static_features: str | None, overrides: list[str] | None) -> list[str]:
    """--future-features / --static-features as the --set overrides they stand for (--set comes after: it wins)."""
    return [f"data.{key}={value}" for key, value in (("future_features", future_features),
                                                      ("static_features", static_features)) if value] \
        + list(overrides or [])


def build_config(config: Optional[Path], data: Optional[str], time_col: Optional[str], target: Optional[str],
                 features: Optional[str], id_col: Optional[str], window: Optional[int], horizon: Optional[int],
                 season: Optional[int], overrides: Optional[list[str]], validate: bool = True):
    """Config file (or the bundled demo config when neither -c nor --data is given) + flags + --set.

    ``validate=False`` returns the merged mapping unvalidated (the doctor reports semantic problems as findings).
    """
    from lstmcast.config import apply_overrides, read_yaml_mapping, validate_config
    from lstmcast.data.io import bundled_path

    if config is not None:
        raw = read_yaml_mapping(config)
    elif data is None:
        raw = read_yaml_mapping(bundled_path("demo.yaml"))
        raw.setdefault("data", {})["path"] = str(bundled_path())
    else:
        raw = {}
    flags = {"path": data, "time_col": time_col, "target": target, "features": features, "id_col": id_col,
             "window": window, "horizon": horizon, "season": season}
    section = raw.setdefault("data", {})
    if not isinstance(section, dict):
        raise ConfigError("data: must be a mapping of keys (path, time_col, target, ...)")
    section.update({k: v for k, v in flags.items() if v is not None})
    raw = apply_overrides(raw, list(overrides or []))
    path = raw.get("data", {}).get("path") if isinstance(raw.get("data"), dict) else None
    if isinstance(path, str) and not os.path.lexists(path):  # answered now, not after seconds of importing torch
        from lstmcast.data.io import check_file  # (a folder may be a Parquet dataset: the reader judges it)

        check_file(Path(path))
    return validate_config(raw) if validate else raw
