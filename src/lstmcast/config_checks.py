"""The config's error lines: pydantic's errors as one line per key, and the checks across keys that pydantic's
per-field validation cannot make (config.py builds the tree; this module only reads it)."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from pydantic import BaseModel

from lstmcast.errors import MAX_ECHO, cut, did_you_mean, short


def all_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys: list[str] = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        keys.append(key)
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            keys.extend(all_keys(ann, key + "."))
    return keys


_AUTO_BRANCH = "literal['auto']"

# names other forecasting libraries (Darts, NeuralForecast, PyTorch Forecasting, Keras) give lstmcast's settings:
# spelling distance alone sent train.learning_rate to train.min_steps
SYNONYMS = {
    "learning_rate": "lr", "learningrate": "lr", "eta": "lr",
    "epochs": "max_epochs", "n_epochs": "max_epochs", "num_epochs": "max_epochs", "max_epoch": "max_epochs",
    "hidden": "hidden_size", "hidden_dim": "hidden_size", "hidden_units": "hidden_size", "units": "hidden_size",
    "encoder_hidden_size": "hidden_size", "n_hidden": "hidden_size",
    "layers": "num_layers", "n_layers": "num_layers", "n_rnn_layers": "num_layers", "encoder_n_layers": "num_layers",
    "rnn_layers": "num_layers",
    "input_chunk_length": "window", "input_size": "window", "lookback": "window", "window_size": "window",
    "context_length": "window", "lags": "window", "seq_len": "window", "max_encoder_length": "window",
    "output_chunk_length": "horizon", "h": "horizon", "forecast_horizon": "horizon", "prediction_length": "horizon",
    "max_prediction_length": "horizon", "pred_len": "horizon",
    "early_stop_patience_steps": "patience", "early_stopping_patience": "patience",
    "quantiles": "levels", "level": "levels", "intervals": "levels", "prediction_intervals": "levels",
    "confidence": "levels", "coverage": "levels",
    "fill": "missing", "fillna": "missing", "fill_missing": "missing", "missing_values": "missing",
    "nan_policy": "missing", "na_policy": "missing", "impute": "missing",
    "time_column": "time_col", "timestamp_col": "time_col", "date_col": "time_col", "ds": "time_col",
    "time_idx": "time_col", "date": "time_col", "time": "time_col",
    "target_col": "target", "target_column": "target", "value_col": "target", "y": "target", "value_cols": "target",
    "id": "id_col", "unique_id": "id_col", "series_id": "id_col", "group_col": "id_col", "group_ids": "id_col",
    "id_column": "id_col",
    "frequency": "freq", "seasonality": "season", "season_length": "season", "period": "season",
    "random_seed": "seed", "random_state": "seed",
    "gradient_clip_val": "clip_norm", "grad_clip": "clip_norm", "clip": "clip_norm", "max_grad_norm": "clip_norm",
    "dropout_rate": "dropout", "batch": "batch_size",
    "scaler": "scaling", "scaler_type": "scaling", "normalize": "scaling", "normalise": "scaling",
    "past_covariates": "features", "covariates": "features", "hist_exog_list": "features", "exog": "features",
    "future_covariates": "future_features", "futr_exog_list": "future_features",
    "time_varying_known_reals": "future_features",
    "static_covariates": "static_features", "stat_exog_list": "static_features", "static_reals": "static_features",
    "accelerator": "device", "val_size": "val_fraction", "test_size": "test_fraction",
    "n_trials": "trials", "num_trials": "trials", "date_format": "time_format", "datetime_format": "time_format",
    "sep": "delimiter", "separator": "delimiter",
}


def suggest_key(key: str, keys: list[str]) -> str:
    """``" (did you mean 'train.lr'?)"``: a synonym of the last part, or the same name in another section, first
    (in the same section when it has the key), else the closest spelling; ``""`` when nothing is close."""
    section, _, leaf = key.rpartition(".")
    leaf = leaf.lower().replace("-", "_")
    wanted = SYNONYMS.get(leaf, leaf)  # a known key in the wrong section (train.levels) finds its section too
    found = [k for k in keys if k.rpartition(".")[2] == wanted and "." in k]
    same = [k for k in found if k.rpartition(".")[0] == section]
    if same or found:
        return f" (did you mean '{(same or found)[0]}'?)"
    return did_you_mean(key, keys)


def merge_auto_unions(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``int | 'auto'`` fields fail in both union branches: report one problem, saying 'auto' is allowed."""
    merged = []
    for err in errors:
        loc = tuple(err["loc"])
        if loc and loc[-1] == _AUTO_BRANCH:
            continue
        if any(e["loc"] == (*loc[:-1], _AUTO_BRANCH) for e in errors) and loc:
            err = {**err, "loc": loc[:-1], "msg": err["msg"] + " (or 'auto')"}
        merged.append(err)
    return merged


def describe(err: dict[str, Any], keys: list[str]) -> str:
    """One pydantic error as a line naming the key, what is wrong and the value (and the closest known key)."""
    key = cut(".".join(str(p) for p in err["loc"]))
    if err["type"] == "extra_forbidden":
        return f"unknown key '{key}'{suggest_key(key, keys)}"
    hint = ""
    if err["type"] == "literal_error" and isinstance(err.get("input"), str):  # e.g. device: 'cuda0'
        hint = did_you_mean(err["input"][:MAX_ECHO],
                            re.findall(r"'([^']*)'", str(err.get("ctx", {}).get("expected", ""))))
    return f"{key}: {err['msg'].lower()}, got {short(err.get('input'))}{hint}"


def role_problems(d: Any) -> list[str]:
    """Each column has one role (FAULTS C6: [y, y] would train on one column twice and forecast it twice)."""
    problems = []
    lists = (("data.target", d.target), ("data.features", d.features),
             ("data.future_features", d.future_features), ("data.static_features", d.static_features))
    for key, names in lists:
        repeated = sorted(n for n, count in Counter(names).items() if count > 1)
        if repeated:
            problems.append(f"{key} lists {short(repeated)} more than once: name each column once")
    roles: dict[str, str] = {}
    singles = [("data.id_col", [d.id_col]), ("data.time_col", [d.time_col])]
    for key, names in singles + list(lists):
        for name in dict.fromkeys(n for n in names if n is not None):
            if name in roles and roles[name] != key:
                problems.append(f"{roles[name]} {short(name)} is also listed in {key}: pick one role for it")
            roles.setdefault(name, key)
    return problems
