"""Prediction and backtests on Apache Spark (optional extra ``spark``): series never split, the run loaded
once per Python worker from its path. pyspark is imported only when a name below is used.

>>> from lstmcast.spark import local_session, predict           # doctest: +SKIP
>>> predict("runs/demo", local_session().read.parquet("recent/")).show()  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import Any

from lstmcast.errors import ConfigError

_LAZY = {
    "predict": "lstmcast.spark.job", "predict_with_errors": "lstmcast.spark.job",
    "backtest": "lstmcast.spark.job", "backtest_with_errors": "lstmcast.spark.job",
    "local_session": "lstmcast.spark.job", "Result": "lstmcast.spark.job",
    "predict_dataset": "lstmcast.spark.dataset", "read_manifest": "lstmcast.spark.plan",
}
__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        try:
            module = importlib.import_module(_LAZY[name])
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.split(".")[0] in ("pyspark", "py4j"):
                raise ConfigError("the Spark engine needs pyspark: pip install 'lstmcast[spark]' (and a Java 17+ "
                                  "runtime)") from None
            raise
        value = getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'lstmcast.spark' has no attribute {name!r}")
