"""RUN/report.html: one self-contained page for people who would rather look than read.

Everything is read from the run folder (config.yaml, meta.json, history.json, metrics.json, monitor.json,
diagnosis.json, doctor.json, loss.png, forecast.png), so ``lstmcast report RUN`` works on any finished
run; plots are embedded as base64 PNG and a Content-Security-Policy forbids any network access. A part
whose file is missing says which file and what writes it instead of failing the page.

>>> from lstmcast.report.html import write_report
>>> write_report("runs/demo")                       # doctest: +SKIP
PosixPath('runs/demo/report.html')
"""

from __future__ import annotations

import base64
import html
import json
import logging
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from lstmcast import atomic
from lstmcast.data.coverage import summary_lines
from lstmcast.errors import CheckpointError, LstmcastError
from lstmcast.inference.backtest import methods
from lstmcast.metrics import NAMES
from lstmcast.report.plots import probe_plot

log = logging.getLogger(__name__)

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0 auto;max-width:1180px;padding:1.2em;
color:#1d2430;line-height:1.45}
h1{margin-bottom:.1em}h2{border-bottom:1px solid #d8dde6;padding-bottom:.2em;margin-top:1.6em}
nav a{margin-right:1em}table{border-collapse:collapse;margin:.6em 0}
th,td{border:1px solid #d8dde6;padding:.3em .6em;text-align:left;vertical-align:top}
td.num{text-align:right;font-variant-numeric:tabular-nums}th{background:#f2f4f8}
#metrics-table{font-size:.9em}#metrics-table th{overflow-wrap:anywhere}
tr.model td{font-weight:600}td.best{background:#e3f4e5}
img{max-width:100%;height:auto;border:1px solid #eef0f4}
pre{background:#f6f8fa;padding:.8em;overflow-x:auto;font-size:.85em}
.sev-error{color:#b00020;font-weight:600}.sev-warning{color:#a35d00;font-weight:600}
.sev-advice{color:#1a5fb4}.sev-info{color:#555}.missing{color:#777;font-style:italic}
.verdict{font-size:1.25em;font-weight:600}
"""
_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
SECTIONS = (("summary", "Summary"), ("diagnosis", "Diagnosis"), ("metrics", "Backtest"),
            ("curves", "Learning curves"), ("forecast", "Forecast"), ("monitor", "Inside the LSTM"),
            ("doctor", "Doctor"), ("data", "Data"), ("config", "Config"))


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _read_json(run: Path, name: str) -> Any:
    p = run / name
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        log.warning("report: %s is not valid JSON (%s); that part of the report is left out", p, exc)
        return None


def _missing(name: str, writer: str) -> str:
    return f'<p class="missing">{_esc(name)} is not in the run folder ({_esc(writer)}).</p>'


def _img(path: Path, alt: str, writer: str) -> str:
    if not path.is_file():
        return _missing(path.name, writer)
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{_esc(alt)}" src="data:image/png;base64,{data}">'


def _table(head: list[str] | None, rows: list[list[str]], table_id: str = "") -> str:
    """``rows`` hold ready HTML cells (``<td>...</td>``); ``head`` plain text (None: no header row). Header names
    may break after an underscore (interval_score_95), so a wide table fits the page."""
    ident = f' id="{table_id}"' if table_id else ""
    ths = "".join(f"<th>{_esc(h).replace('_', '_<wbr>')}</th>" for h in head or [])
    body = "".join(f"<tr>{''.join(r)}</tr>" for r in rows)
    thead = f"<thead><tr>{ths}</tr></thead>" if head else ""
    return f"<table{ident}>{thead}<tbody>{body}</tbody></table>"


def _when(stamp: Any) -> str:
    """A stored timestamp as people read it: 2024-01-09 23:00 (numpy's text carries nine zero decimals)."""
    text = str(stamp)
    if not re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?", text):
        return text  # integer time, or already plain
    text = re.sub(r"\.0+$", "", text).replace("T", " ")
    return text[:-9] if text.endswith(" 00:00:00") else text[:-3] if text.endswith(":00") else text


def _num(v: Any) -> str:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return f"{v:.4g}" if isinstance(v, float) else f"{v:,}"
    return _esc(v)


def _findings_table(findings: list[dict[str, Any]], table_id: str) -> str:
    if not findings:
        return "<p>No findings.</p>"
    rows = [[f'<td class="sev-{_esc(f.get("severity"))}">{_esc(f.get("severity"))}</td>',
             f"<td>{_esc(f.get('message'))}</td>", f"<td>{_esc(f.get('fix', ''))}</td>"] for f in findings]
    return _table(["severity", "finding", "fix"], rows, table_id)


# -- sections -----------------------------------------------------------------------------------
def _overhead_text(ov: dict[str, Any], n_probes: int) -> str:
    """The measured share of training time, and the probe budget claimed only where it was met."""
    share = ov.get("probe_seconds", 0) / max(ov.get("train_seconds", 0), 1e-9)
    text = (f"The monitor took {ov.get('fraction', 0):.1%} of the training time in all (TensorBoard writing "
            f"included), its {n_probes} probes {share:.1%}")
    budget, postponed = ov.get("max_overhead"), ov.get("postponed_probes", 0)
    later = f"; {postponed} probe(s) postponed to keep to it" if postponed else ""
    if budget is None or ov.get("within_budget") is None:
        return text + "."
    if ov["within_budget"]:
        return text + f", within their {budget:.0%} budget{later}."
    return text + f", over their {budget:.0%} budget (the first and the last probe always run){later}."


def metrics_section(metrics: dict[str, dict[str, float]] | None) -> str:
    """The backtest table: one row per method, best value per column marked; exact values in data-value."""
    if not metrics:
        return _missing("metrics.json", "written by `lstmcast train`")

    per_series = len(metrics.get("per_series", {}))
    metrics = methods(metrics)
    cols = [n for n in NAMES if any(n in row for row in metrics.values())]
    cols += sorted({k for row in metrics.values() for k in row} - set(cols))
    best = {c: min((row[c] for row in metrics.values() if isinstance(row.get(c), (int, float))
                    and math.isfinite(row[c])), default=None, key=_badness(c)) for c in cols}
    rows = []
    for method, row in metrics.items():
        cells = [f"<td>{_esc(method)}</td>"]
        for c in cols:
            v = row.get(c)
            mark = " best" if v is not None and v == best[c] and len(metrics) > 1 else ""
            value = "" if v is None else f' data-value="{_esc(repr(float(v)))}"'
            cells.append(f'<td class="num{mark}"{value}>{"" if v is None else _num(float(v))}</td>')
        rows.append(cells)
    head = ["method", *(f"{c} (%)" if c == "sMAPE" else c for c in cols)]
    table = _table(head, rows, "metrics-table").replace("<tr><td>model</td>", '<tr class="model"><td>model</td>', 1)
    note = ""
    if any(c.startswith("coverage_") for c in cols):
        note = (" Intervals: coverage_L is the share of actuals inside the L% interval (best: nearest L%), width_L "
                "and interval_score_L (Winkler) are scaled like MASE, pinball is the scaled pinball loss over all "
                "quantiles; seasonal naive's intervals come from its in-sample error quantiles.")
    return (table + "<p>Rolling-origin backtest on the test split, original units (sMAPE in percent; MASE below "
            "1 beats the in-sample seasonal-naive forecast). Best value per column shaded."
            + (f" {per_series} series: sMAPE and MASE are means over the series; MAE_pooled / RMSE_pooled mix "
               "the series' units; each series' metrics are in metrics.json (per_series), its forecasts in "
               "backtest.csv." if per_series else "") + f"{note}</p>")


def _badness(column: str) -> Any:
    """Lower is better, except coverage, where nearer the nominal level is better."""
    if column.startswith("coverage_") and column[9:].isdigit():
        nominal = int(column[9:]) / 100
        return lambda v: abs(v - nominal)
    return lambda v: v


def evaluations_section(run: Path) -> str | None:
    """`lstmcast evaluate` results (RUN/evaluations/*.json), each labelled with its data: never the held-out
    backtest above. None when there are none (the section is left out)."""
    parts = []
    for path in sorted((run / "evaluations").glob("*.json")):
        try:
            rec = atomic.parse_json(path.read_bytes(), str(path))
            sha, metrics = rec.get("data_sha256") or "unknown", rec["metrics"]
            label = (f"<p><b>{_esc(path.stem)}</b>: backtest on {_esc(rec.get('data'))} (sha256 {_esc(sha[:16])}), "
                     f"{_esc(rec.get('created'))}{' - the training data' if rec.get('training_data') else ''}</p>")
            parts.append(label + metrics_section(metrics).split("<p>Rolling-origin")[0])
        except (OSError, LstmcastError, KeyError, TypeError, AttributeError, ValueError) as exc:
            parts.append(f'<p class="missing">{_esc(path.name)} is unreadable ({_esc(exc)})</p>')
    if not parts:
        return None
    return ("<p><b>Not the held-out backtest.</b> These were computed later by <code>lstmcast evaluate</code> on "
            "the data named with each; data the model trained on gives optimistic numbers.</p>" + "".join(parts))


def diagnosis_section(diagnosis: dict[str, Any] | None, monitor: dict[str, Any] | None) -> str:
    if diagnosis is None:
        found = (monitor or {}).get("findings", [])
        return _missing("diagnosis.json", "written at the end of `lstmcast train`") + _findings_table(
            found, "diagnosis-findings")
    head = f'<p class="verdict">{_esc(diagnosis.get("summary", diagnosis.get("verdict", "")))}</p>'
    return head + _findings_table(diagnosis.get("findings", []), "diagnosis-findings")


def monitor_section(run: Path, monitor: dict[str, Any] | None, plots_in_run: bool = True) -> str:
    """The probe's gate statistics; ``plots_in_run``: monitor.png is (re)written into the run folder, else the
    plot is drawn in a temporary folder and only embedded (a report elsewhere writes nothing into RUN: R13)."""
    if monitor is None:
        return _missing("monitor.json", "written by `lstmcast train` from its hidden-state probe")
    probes = monitor.get("probes") or []
    if not probes:
        return "<p>The probe did not run in this training (see the log).</p>"

    if not plots_in_run:
        with tempfile.TemporaryDirectory(prefix="lstmcast-report-") as tmp:
            return monitor_section(Path(tmp), monitor)
    plot = run / "monitor.png"
    probe_plot(probes, plot)
    last = probes[-1]
    rows = []
    for k, layer in enumerate(last["layers"], start=1):
        rows.append([f"<td>layer {k}</td>"] + [f'<td class="num">{layer["gate_mean"][g]:.3f} / '
                                                f'{layer["gate_saturated"][g]:.0%}</td>'
                                                for g in ("input", "forget", "cell", "output")]
                    + [f'<td class="num">{layer["dead_units"]} of {layer["units"]}</td>',
                       f'<td class="num">{layer["h_abs_mean"]:.3g}</td>',
                       f'<td class="num">{layer["c_abs_mean"]:.3g}</td>'])
    table = _table(["layer", "input gate", "forget gate", "cell candidate", "output gate", "dead units",
                    "mean |h_n|", "mean |c_n|"], rows, "probe-table")
    ov = monitor.get("overhead", {})
    note = (f"<p>Gate cells: mean activation / share saturated, on a fixed batch of {monitor.get('probe_size')} "
            f"validation windows at epoch {last['epoch']}, recomputed from the layer weights (largest "
            f"difference to the kernel's h_n/c_n {last.get('recompute_error', 0):.1e}). "
            f"{_overhead_text(ov, len(probes))}"
            "</p>")
    return _img(plot, "gate and hidden-state statistics over epochs", "") + table + note


def doctor_section(doctor: dict[str, Any] | None) -> str:
    if doctor is None:
        return _missing("doctor.json", "written by `lstmcast train`; run `lstmcast doctor` for the checks")
    trace = doctor.get("trace") or []
    rows = [[f"<td>{_esc(r.get('name'))}</td>", f"<td>{_esc(tuple(r.get('shape', [])))}</td>",
             f"<td>{_esc(r.get('legend', ''))}</td>"] for r in trace]
    total = (doctor.get("parameters") or {}).get("total")
    intro = f"<p>{_num(total)} parameters; {_esc(doctor.get('source', ''))}.</p>" if total is not None else ""
    return (intro + _findings_table(doctor.get("findings", []), "doctor-findings")
            + (_table(["tensor", "shape", "legend"], rows, "shape-trace") if rows else ""))


def data_section(meta: dict[str, Any] | None, history: list[dict[str, Any]] | None) -> str:
    if meta is None:
        return _missing("meta.json", "written by `lstmcast train`")
    lengths = meta.get("lengths") or []
    items = [("layout", meta.get("layout")), ("series", len(meta.get("ids") or []) or 1),
             ("targets", ", ".join(meta.get("targets") or [])),
             ("features", ", ".join(meta.get("features") or []) or "none"), ("frequency", meta.get("freq")),
             ("rows per series", f"{min(lengths):,} - {max(lengths):,}" if lengths else "?"),
             ("train / validation end (first series)",
              f"{(meta.get('train_end') or ['?'])[0]} / {(meta.get('val_end') or ['?'])[0]}"),
             ("window L / horizon H / season", f"{meta.get('window')} / {meta.get('horizon')} / {meta.get('season')}"),
             ("last timestamp", _when((meta.get("last_time") or ["?"])[0])),
             ("parameters", _num(meta.get("n_parameters"))), ("device / precision",
                                                            f"{meta.get('device')} / {meta.get('precision')}"),
             ("epochs trained", len(history or []))]
    iv = meta.get("intervals") if isinstance(meta.get("intervals"), dict) else None
    if iv and iv.get("levels"):
        items.append(("intervals", _interval_method(iv)))
    return _table(None, [[f"<th>{_esc(k)}</th>", f"<td>{_esc(v)}</td>"] for k, v in items], "data-table")


def _interval_method(iv: dict[str, Any]) -> str:
    """Which intervals the forecasts carry and how they were built (model.interval_method; auto's two scores)."""
    levels = ", ".join(f"{level}%" for level in iv.get("levels") or [])
    method = {"residual": "residual: the median +- conformal quantiles of its own scaled errors",
              "quantile": "quantile: the learned quantile head, conformally calibrated"}.get(iv.get("method"),
                                                                                           str(iv.get("method")))
    text = f"{levels}; {method}, on {iv.get('calibration_windows', '?')} validation windows"
    scores = iv.get("method_scores")
    if isinstance(scores, dict) and scores:
        text += " (chosen by interval score: " + ", ".join(
            f"{k} {_num(float(v))}" for k, v in scores.items() if isinstance(v, (int, float))) + ")"
    return text


def summary_section(meta: dict[str, Any] | None, metrics: dict[str, Any] | None,
                    diagnosis: dict[str, Any] | None) -> str:
    parts = []
    if diagnosis:
        parts.append(f"Diagnosis: <b>{_esc(diagnosis.get('summary', ''))}</b>"
                     + (f" (best epoch {diagnosis['best_epoch']})" if diagnosis.get("best_epoch") else "") + ".")
    if metrics and "model" in metrics:
        m = metrics["model"]
        base = {k: v for k, v in metrics.items() if k not in ("model", "per_series", "series")}
        if "MASE" in m and base:
            name, row = min(base.items(), key=lambda kv: kv[1].get("MASE", math.inf))
            verdict = "beats" if m["MASE"] < row.get("MASE", math.inf) else "does not beat"
            parts.append(f"Backtest MASE {m['MASE']:.3g}: the model {verdict} the best baseline "
                         f"({_esc(name)}, {row.get('MASE', math.nan):.3g}).")
    if metrics and metrics.get("series"):  # a table: every count, and the series left out of each part

        parts.append("<br>".join(_esc(line) for line in summary_lines(metrics["series"])) + "<br>")
    if meta and meta.get("future_features"):  # training made no forecast: the horizon's covariates are not known
        parts.append(f"No forecast yet: the model forecasts {_esc(meta.get('horizon'))} steps of "
                     f"{_esc(', '.join(meta.get('targets') or []))} once given the known-future covariates "
                     f"{_esc(', '.join(meta['future_features']))} over them (<code>lstmcast predict RUN --future "
                     "NEXT.csv</code>).")
    elif meta:
        parts.append(f"Forecasts {_esc(meta.get('horizon'))} steps of {_esc(', '.join(meta.get('targets') or []))} "
                     f"from the last {_esc(meta.get('window'))}.")
        refit = meta.get("refit")
        if isinstance(refit, dict):  # train.refit: two models, each number says which
            parts.append(f"The forecasts come from the final model, refitted on all {_esc(refit.get('rows'))} rows "
                         f"for {_esc(refit.get('steps'))} steps; the backtest comes from the first model, which "
                         "never saw the test split.")
        local = meta.get("local")
        if isinstance(local, dict) and isinstance(local.get("weight"), (int, float)) and local["weight"] > 0:
            w = float(local["weight"])  # meta.json: read as untrusted, printed as a number only
            parts.append(f"Each forecast, and the backtest's, is {1 - w:.2f} x the model's + {w:.2f} x the series' "
                         "own Theta forecast (model.local).")
    return "<p>" + " ".join(parts) + "</p>" if parts else "<p>No results in this folder yet.</p>"


# -- the page -----------------------------------------------------------------------------------
def render_report(run: str | os.PathLike[str], plots_in_run: bool = True) -> str:
    """The report of a run folder as one HTML string (writes monitor.png next to the other plots unless
    ``plots_in_run`` is False: then nothing is written into the run folder)."""
    folder = Path(run)
    if not folder.is_dir():
        what = "is not a folder" if os.path.lexists(folder) else "does not exist"
        raise CheckpointError(f"run folder {str(folder)!r} {what}: pass the folder `lstmcast train` printed")
    meta, metrics = _read_json(folder, "meta.json"), _read_json(folder, "metrics.json")
    history, monitor = _read_json(folder, "history.json"), _read_json(folder, "monitor.json")
    diagnosis, doctor = _read_json(folder, "diagnosis.json"), _read_json(folder, "doctor.json")
    if meta is None and metrics is None and history is None:
        raise CheckpointError(f"{folder} holds no lstmcast run (no meta.json, metrics.json or history.json): "
                              "pass the folder `lstmcast train` wrote")
    config = folder / "config.yaml"
    body = {
        "summary": summary_section(meta, metrics, diagnosis),
        "diagnosis": diagnosis_section(diagnosis, monitor),
        "metrics": metrics_section(metrics),
        "curves": _img(folder / "loss.png", "training and validation loss per epoch", "written by `lstmcast train`"),
        "forecast": _img(folder / "forecast.png", "history, forecast and backtest windows",
                         "written by `lstmcast train`"),
        "monitor": monitor_section(folder, monitor, plots_in_run),
        "doctor": doctor_section(doctor),
        "data": data_section(meta, history),
        "config": (f"<details><summary>config.yaml (resolved)</summary><pre>{_esc(config.read_text(encoding='utf-8'))}"
                   "</pre></details>" if config.is_file()
                   else _missing("config.yaml", "written by `lstmcast train`")),
    }
    evaluations = evaluations_section(folder)
    shown = SECTIONS if evaluations is None else (*SECTIONS[:3], ("evaluations", "Other evaluations"), *SECTIONS[3:])
    body["evaluations"] = evaluations or ""
    title = f"lstmcast run {folder.resolve().name}"
    created = (f" · trained {_esc(meta.get('created'))} with lstmcast {_esc(meta.get('lstmcast_version'))}"
               if meta else "")
    nav = "".join(f'<a href="#{k}">{_esc(v)}</a>' for k, v in shown)
    sections = "".join(f'<section id="{k}"><h2>{_esc(v)}</h2>{body[k]}</section>' for k, v in shown)
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body>"
            f"<h1>{_esc(title)}</h1><p>{_esc(folder)}{created}</p><nav>{nav}</nav>{sections}</body></html>\n")


def write_report(run: str | os.PathLike[str], out: str | os.PathLike[str] | None = None) -> Path:
    """Write the report of ``run`` to ``out`` (default RUN/report.html) atomically; return its path."""
    target = Path(out) if out is not None else Path(run) / "report.html"
    atomic.check_target(out if out is not None else target)  # a symlink, folder, device or 'dir/': refused first
    inside = os.path.realpath(target.parent) == os.path.realpath(run)  # RUN/report.html may refresh monitor.png
    atomic.write_text(target, render_report(run, plots_in_run=inside))
    return target


def try_write_report(run: str | os.PathLike[str]) -> Path | None:
    """``write_report`` at the end of ``train``: a failure is logged, never raised (the run itself is complete)."""
    try:
        return write_report(run)
    except Exception as exc:  # noqa: BLE001 - the report is an extra; training already succeeded
        log.warning("could not write %s (%s: %s); retry with `lstmcast report %s`",
                    Path(run) / "report.html", type(exc).__name__, exc, run)
        return None
