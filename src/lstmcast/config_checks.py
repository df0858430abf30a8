"""The config's error lines: pydantic's errors as one line per key, and the checks across keys that pydantic's
per-field validation cannot make (config.py builds the tree; this module only reads it)."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from pydantic import BaseModel

from lstmcast.errors import did_you_mean
from lstmcast.safe_yaml import MAX_ECHO, cut, short


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
        return f"unknown key '{key}'{did_you_mean(key, keys)}"
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
