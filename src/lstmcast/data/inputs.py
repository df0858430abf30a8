"""The model's input roles beyond the past: known-future channels (future covariates, calendar) and
per-series statics, fitted on the training data and stored in meta.json so predict encodes the same way.

Channel order of the series tensor: targets, past-only features, future features, calendar (sin/cos
pairs); the last ``future_size`` channels are known over the horizon. Statics: numeric ones standardised
across the training series, categorical ones as codes (0: a value never seen in training), then the
series id's code with ``model.id_embedding`` (0 for a new series).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from lstmcast.data.calendar import calendar_features, calendar_for
from lstmcast.data.grid import label
from lstmcast.errors import DataError, cut

if TYPE_CHECKING:
    from lstmcast.config import DataConfig
    from lstmcast.data.static import StaticValues
    from lstmcast.data.validate import SeriesSet


@dataclass
class InputSpec:
    """What the model reads besides the target's past; JSON-serialisable (``as_dict`` / ``from_dict``)."""

    future_features: list[str] = field(default_factory=list)
    calendar: list[str] = field(default_factory=list)  # calendar feature names (each gives sin, cos)
    static_numeric: list[str] = field(default_factory=list)
    static_mean: list[float] = field(default_factory=list)
    static_std: list[float] = field(default_factory=list)
    static_min: list[float] = field(default_factory=list)  # the training range (runs before it: empty)
    static_max: list[float] = field(default_factory=list)
    static_categorical: list[str] = field(default_factory=list)
    vocabularies: list[list[str]] = field(default_factory=list)  # per categorical: code k+1 is vocab[k]
    id_vocabulary: list[str] | None = None  # model.id_embedding: the training series ids

    @property
    def future_size(self) -> int:
        return len(self.future_features) + 2 * len(self.calendar)

    @property
    def static_size(self) -> int:
        return len(self.static_numeric)

    @property
    def cardinalities(self) -> tuple[int, ...]:
        cards = [len(v) + 1 for v in self.vocabularies]
        if self.id_vocabulary is not None:
            cards.append(len(self.id_vocabulary) + 1)
        return tuple(cards)

    @property
    def has_statics(self) -> bool:
        return bool(self.static_numeric or self.cardinalities)

    def model_sizes(self) -> dict[str, Any]:
        """The build_model keyword arguments for these inputs."""
        return {"future_size": self.future_size, "static_size": self.static_size,
                "static_cardinalities": self.cardinalities}

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> InputSpec:
        return cls(**raw) if raw else cls()


def fit_inputs(series: SeriesSet, cfg: DataConfig, id_embedding: bool = False) -> InputSpec:
    """The input spec of a training set: calendar names chosen for its frequency, static encodings fitted."""
    spec = InputSpec(future_features=list(series.future_features),
                     calendar=calendar_for(series.freq, cfg.calendar, series.integer_time))
    st = series.static
    if st is not None:
        num = np.asarray(st.numeric, dtype=np.float64).reshape(len(series.ids), -1)
        spec.static_numeric = list(st.numeric_names)
        mean, std = num.mean(axis=0), num.std(axis=0)
        spec.static_mean = [float(v) for v in mean]
        spec.static_std = [float(v) if v > 0 else 1.0 for v in std]
        spec.static_min = [float(v) for v in num.min(axis=0)] if len(num) else []
        spec.static_max = [float(v) for v in num.max(axis=0)] if len(num) else []
        spec.static_categorical = list(st.categorical_names)
        cats = np.asarray(st.categorical, dtype=object).reshape(len(series.ids), -1)
        spec.vocabularies = [sorted({str(v) for v in cats[:, k]}) for k in range(cats.shape[1])]
    if id_embedding:
        spec.id_vocabulary = [str(i) for i in series.ids]
    return spec


def calendar_block(spec: InputSpec, times: np.ndarray, tz: str | None = None) -> np.ndarray:
    """(N, 2K) float32 calendar channels for ``times`` (empty (N, 0) without calendar features)."""
    if not spec.calendar:
        return np.zeros((len(times), 0), dtype=np.float32)

    return calendar_features(times, spec.calendar, tz).astype(np.float32)


def static_table(spec: InputSpec, static: StaticValues | None, ids: list[str]) -> np.ndarray | None:
    """(S, numeric + categorical codes) float32 in ``ids`` order; None when the model takes no statics.

    A category never seen in training, and a series id the id embedding does not know, get code 0."""
    if not spec.has_statics:
        return None
    S = len(ids)
    parts = []
    if spec.static_numeric or spec.vocabularies:
        if static is None:
            raise DataError(f"the model was trained with static features "
                            f"{spec.static_numeric + spec.static_categorical}: the data must hold them "
                            "(one constant value per series)")
        _check_static_kinds(spec, static)
        num = np.asarray(static.numeric, dtype=np.float64).reshape(S, -1)
        scaled = (num - np.asarray(spec.static_mean)) / np.asarray(spec.static_std)
        _check_static_range(spec, num, scaled, ids)
        parts.append(scaled)
        cats = np.asarray(static.categorical, dtype=object).reshape(S, -1)
        for k, vocab in enumerate(spec.vocabularies):
            index = {v: j + 1 for j, v in enumerate(vocab)}
            parts.append(np.array([[index.get(str(v), 0)] for v in cats[:, k]], dtype=np.float64))
    if spec.id_vocabulary is not None:
        index = {v: j + 1 for j, v in enumerate(spec.id_vocabulary)}
        parts.append(np.array([[index.get(str(i), 0)] for i in ids], dtype=np.float64))
    return np.concatenate(parts, axis=1).astype(np.float32)


def _check_static_kinds(spec: InputSpec, static: StaticValues) -> None:
    """A static column must be numbers or text as in training: numbers given as text (a DataFrame column of
    strings) would otherwise drop out of the numeric block and surface as a shape error naming no column."""
    for name in spec.static_numeric:
        if name in static.categorical_names:
            k = static.categorical_names.index(name)
            raise DataError(f"static feature {name!r} held numbers in training but holds text here "
                            f"({label(static.ids[0])}: {cut(repr(str(static.categorical[0, k])), 40)}): give "
                            "numbers, e.g. "
                            f"df[{cut(name, 40)!r}] = pd.to_numeric(df[{cut(name, 40)!r}])")
    for name in spec.static_categorical:
        if name in static.numeric_names:
            k = static.numeric_names.index(name)
            raise DataError(f"static feature {name!r} held text (categories) in training but holds numbers here "
                            f"({label(static.ids[0])}: {float(static.numeric[0, k])!r}): give the categories as "
                            f"text, e.g. df[{cut(name, 40)!r}] = df[{cut(name, 40)!r}].astype(str)")


def _check_static_range(spec: InputSpec, num: np.ndarray, scaled: np.ndarray, ids: list[str]) -> None:
    """A numeric static far outside the training range makes the model extrapolate (1e30 against 1..3 gave a
    forecast of -3.7e30): a warning naming the series, the column and the range when the value lies more than
    the range's width (at least one training std) beyond it; a DataError when its standardised value does not
    even fit float32 (the model's input would be inf)."""
    log = logging.getLogger(__name__)
    for k, name in enumerate(spec.static_numeric):
        huge = ~(np.abs(scaled[:, k]) <= np.finfo(np.float32).max)  # NaN and inf too
        if huge.any():
            i = int(np.flatnonzero(huge)[0])
            raise DataError(f"{label(ids[i])}: static feature {name!r} is {num[i, k]:.6g}, so far from the training "
                            f"values (mean {spec.static_mean[k]:.6g}, std {spec.static_std[k]:.6g}) that the "
                            "model's input overflows: check the value")
        if k >= len(spec.static_min) or k >= len(spec.static_max):
            continue  # a run saved before the range was stored
        lo, hi = spec.static_min[k], spec.static_max[k]
        width = max(hi - lo, spec.static_std[k])
        far = np.flatnonzero((num[:, k] < lo - width) | (num[:, k] > hi + width))
        if len(far):
            i = int(far[0])
            more = f" (and {len(far) - 1} more series)" if len(far) > 1 else ""
            log.warning("%s%s: static feature %r is %.6g, far outside its training range %.6g to %.6g: the model "
                        "extrapolates and the forecast may be meaningless; check the value, or train on series "
                        "like it", label(ids[i]), more, name, num[i, k], lo, hi)
