"""The `lstmcast` command line. Thin: parse, call the library, print. Exit codes are stable:
0 ok, 2 usage/config, 3 data, 4 checkpoint/artifact, 5 diverged, 130 interrupted.

Heavy modules (torch, pandas, matplotlib, optuna), and the library modules that lead to them, are imported
inside the commands only, so `lstmcast --help` answers fast (tests/unit/test_layering.py checks that
`import lstmcast.cli` loads neither torch nor pandas).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from contextlib import nullcontext
from datetime import datetime
from pathlib import Path
from typing import Any, Optional

import typer

from lstmcast.cli_options import (
    ConfigOpt,
    DataOpt,
    FeatOpt,
    FutureOpt,
    HorizonOpt,
    IdOpt,
    LevelsOpt,
    MissingOpt,
    SeasonOpt,
    SetOpt,
    StaticOpt,
    TargetOpt,
    TimeOpt,
    WindowOpt,
    build_config,
    with_flags,
    with_roles,
)
from lstmcast.cli_output import metrics_table, print_best, print_space, print_stop, print_trained, print_trial
from lstmcast.errors import ConfigError, InterruptedRun, LstmcastError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="LSTM time-series forecasting: train, evaluate, predict, doctor, tune, report, export.")
_STATE = {"debug": False}

@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="Show tracebacks."),
          verbose: bool = typer.Option(False, "-v", "--verbose", help="Log progress details.")) -> None:
    _STATE["debug"] = debug
    # the logger's module name only with --debug: a user acts on the message, a developer looks up its source
    logging.basicConfig(level=logging.INFO if verbose or debug else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s" if debug else "%(levelname)s: %(message)s",
                        stream=sys.stderr)


def _fail(exc: BaseException) -> None:
    if _STATE["debug"]:
        raise exc
    code = exc.exit_code if isinstance(exc, LstmcastError) else 1
    kind = type(exc).__name__
    typer.echo(f"error ({kind}): {exc}", err=True)
    if code == 1:
        typer.echo("this is a bug in lstmcast or an unexpected environment; rerun with --debug for the traceback",
                   err=True)
    raise typer.Exit(code)


def run_guarded(fn, *args: Any, **kwargs: Any) -> Any:
    """Call ``fn`` and turn lstmcast errors into their exit codes (tracebacks only with --debug)."""
    try:
        return fn(*args, **kwargs)
    except typer.Exit:
        raise
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise typer.Exit(130) from None
    except InterruptedRun as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(130) from None
    except Exception as exc:  # noqa: BLE001 - mapped to exit codes in _fail
        _fail(exc)


@app.command()
def train(data: Optional[str] = DataOpt, time_col: Optional[str] = TimeOpt, target: Optional[str] = TargetOpt,
          features: Optional[str] = FeatOpt, id_col: Optional[str] = IdOpt, window: Optional[int] = WindowOpt,
          horizon: Optional[int] = HorizonOpt, season: Optional[int] = SeasonOpt,
          config: Optional[Path] = ConfigOpt, overrides: Optional[list[str]] = SetOpt,
          run: Optional[Path] = typer.Option(None, "--run", help="Run folder (default runs/<timestamp>)."),
          resume: Optional[Path] = typer.Option(None, "--resume", help="Continue the unfinished run in this "
                                                "folder exactly, from its last good checkpoint."),
          no_tensorboard: bool = typer.Option(False, "--no-tensorboard",
                                              help="Write no TensorBoard events to RUN/tb "
                                                   "(same as --set monitor.tensorboard=false)."),
          nproc: int = typer.Option(1, "--nproc", min=1, help="Train data-parallel on this many processes of this "
                                    "machine (gloo, CPU; several machines: torchrun, see README 'Scale')."),
          future_features: Optional[str] = FutureOpt, static_features: Optional[str] = StaticOpt,
          levels: Optional[str] = LevelsOpt, missing: Optional[str] = MissingOpt) -> None:
    """Train on a CSV/Parquet file, backtest against naive baselines, forecast, write a run folder."""
    overrides = with_flags(levels, missing, with_roles(future_features, static_features, overrides))

    if nproc > 1 and int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        from lstmcast.launch import launch

        raise typer.Exit(launch(nproc, sys.argv[1:], run is None and resume is None))
    from lstmcast.training.world import World, env_rank

    if not World(rank=env_rank()).is_main:  # another rank: train only, write nothing

        def _rank() -> None:
            from lstmcast.workflow import outputs_missing, train_rank

            ckpt = None
            if resume is not None:
                if outputs_missing(resume):
                    return  # rank 0 writes the missing outputs alone
                from lstmcast.training.resume import resume_config

                flags = {"path": data, "time_col": time_col, "target": target, "features": features,
                         "id_col": id_col, "window": window, "horizon": horizon, "season": season}
                cfg, ckpt = resume_config(resume, config, flags, overrides)
            else:
                cfg = build_config(config, data, time_col, target, features, id_col, window, horizon, season,
                                   overrides)
            train_rank(cfg, ckpt)

        return run_guarded(_rank)

    def _do() -> None:
        from lstmcast.progress import EpochProgress
        from lstmcast.run.lock import RunLock  # socket, for the lock's host name
        from lstmcast.workflow import default_run_dir, outputs_missing, resume_outputs, train_run

        ckpt = None
        # T9: lock before reading any checkpoint; train_run takes the same lock again (re-entrant)
        with RunLock(resume) if resume is not None and resume.is_dir() else nullcontext():
            if resume is not None and outputs_missing(resume):
                typer.echo(f"{resume}: the model is trained and saved; writing the missing outputs", err=True)
                fc, metrics = resume_outputs(resume)
                return print_trained(fc, metrics, resume)
            if resume is not None:
                flags = {"path": data, "time_col": time_col, "target": target, "features": features,
                         "id_col": id_col, "window": window, "horizon": horizon, "season": season}
                cfg, ckpt = _resume_setup(resume, run, config, flags, overrides)
                run_dir = resume
            else:
                cfg = build_config(config, data, time_col, target, features, id_col, window, horizon, season,
                                   overrides)
                run_dir = run or default_run_dir()
            if no_tensorboard:
                cfg.monitor.tensorboard = False
            with EpochProgress(cfg.train.max_epochs, start_epoch=ckpt.epoch if ckpt is not None else 0) as progress:
                fc, metrics = train_run(cfg, run_dir, callbacks=[progress], resume_from=ckpt)
        print_trained(fc, metrics, run_dir)

    run_guarded(_do)


def _resume_setup(resume: Path, run: Optional[Path], config: Optional[Path], flags: dict[str, Any],
                  overrides: Optional[list[str]]):
    from lstmcast.run.manifest import refuse_unsafe
    from lstmcast.training.resume import resume_config
    from lstmcast.workflow import check_run_dir

    refuse_unsafe(resume)  # a .pt/.pkl file is refused with the reason, never opened
    if run is not None and run.resolve() != resume.resolve():
        raise ConfigError(f"--run {run} and --resume {resume} name different folders: a resumed run continues "
                          "in its own folder; drop --run")
    check_run_dir(resume, resuming=True)
    cfg, ckpt = resume_config(resume, config, flags, overrides)
    typer.echo(f"resuming {resume} from {ckpt.path.name} (epoch {ckpt.epoch}, step {ckpt.step})", err=True)
    return cfg, ckpt


@app.command()
def evaluate(run: Path = typer.Argument(..., help="Run folder written by `lstmcast train`."),
             data: Optional[str] = typer.Option(None, "--data", help="Data to backtest on (default: training data)."),
             name: Optional[str] = typer.Option(None, "--name", help="Name of RUN/evaluations/<name>.json "
                                                "(default: the data file's stem and the time)."),
             start: Optional[str] = typer.Option(None, "--start", help="First window's first forecast step: a "
                                                 "time (2024-03-01), a row (120) or a fraction of each series "
                                                 "(0.6). Default: the test split."),
             stride: Optional[int] = typer.Option(None, "--stride", min=1, help="Steps between windows (default "
                                                  "eval.stride, else the horizon)."),
             windows: Optional[int] = typer.Option(None, "--windows", min=1, help="At most this many windows a "
                                                   "series (default eval.max_origins; with --start all)."),
             refit: bool = typer.Option(False, "--refit", help="Retrain before each window on the rows before it "
                                        "(one training per window).")) -> None:
    """Rolling-origin backtest of a trained run against naive and seasonal-naive baselines.

    Written to RUN/evaluations/<name>.json (metrics, labelled with the data file and its sha256) and
    <name>.csv (every window's forecasts, intervals, cutoff and actuals); RUN/metrics.json stays the held-out
    backtest of training."""

    def _do() -> None:
        from lstmcast.inference.steer import parse_start
        from lstmcast.workflow import evaluate_run

        metrics, path = evaluate_run(run, data, name, parse_start(start), stride, windows, refit)
        metrics_table(metrics, f"backtest of {run} on {data or 'its training data'}")
        typer.echo(f"evaluation written to {path}, every window's forecasts to {path.with_suffix('.csv')} (the "
                   f"held-out backtest stays in {run / 'metrics.json'})")

    run_guarded(_do)


@app.command()
def predict(run: Path = typer.Argument(..., help="Run folder written by `lstmcast train`."),
            data: Optional[str] = typer.Option(None, "--data", help="Recent data (default: the training data); "
                                               "with --engine spark a Parquet dataset folder."),
            out: Optional[str] = typer.Option(None, "--out", help="Output CSV (default RUN/forecast.csv); "
                                               "- for standard output; with --engine spark an output folder."),
            future: Optional[str] = typer.Option(None, "--future", help="Known-future covariates for the next "
                                                 "`horizon` steps (time [+ id] + data.future_features)."),
            engine: str = typer.Option("local", "--engine", help="local (this process) or spark (a Spark job: "
                                       "needs the `spark` extra; see README 'Scale')."),
            master: str = typer.Option("local[2]", "--master", help="--engine spark: the Spark master URL."),
            rows_per_part: int = typer.Option(200_000, "--rows-per-part", min=1, help="--engine spark: input "
                                              "rows per output part (one part is one worker's memory).")) -> None:
    """Forecast the next `horizon` steps with timestamps, in original units, to CSV (or Parquet with Spark)."""

    def _do() -> None:
        if engine == "spark":
            return _predict_spark(run, data, out, future, master, rows_per_part)
        if engine != "local":
            raise ConfigError(f"--engine must be local or spark, got {engine!r}")
        from lstmcast.workflow import predict_run

        frame, target = predict_run(run, data, out, future)
        if target is None:  # --out -: standard output holds the CSV alone
            typer.echo(f"{len(frame)} forecast rows written to standard output", err=True)
            return
        typer.echo(frame.head(10).to_string(index=False))
        typer.echo(f"{len(frame)} forecast rows written to {target}")

    run_guarded(_do)


@app.command()
def update(run: Path = typer.Argument(..., help="Run folder of a model trained with model.stateful: true."),
           data: str = typer.Option(..., "--data", help="New rows (predict's input layout): each series' rows "
                                    "after its last update; earlier rows are ignored.")) -> None:
    """Advance each series' carried LSTM state by its new rows (one LSTM step a row); `predict RUN` then
    forecasts from it. Atomic: a refused or killed update leaves the previous state."""

    def _do() -> None:
        from lstmcast.workflow import update_run

        s = update_run(run, data)
        new = f", {len(s['new_series'])} new series" if s["new_series"] else ""
        typer.echo(f"{s['rows_applied']} rows applied to {s['series_updated']} series, {s['rows_ignored']} rows "
                   f"ignored (at or before a series' last update){new}; state in {run / 'state.json'}")

    run_guarded(_do)


def _predict_spark(run: Path, data: Optional[str], out: Optional[str], future: Optional[str], master: str,
                   rows_per_part: int) -> None:
    if data is None or out is None or str(out) == "-":
        raise ConfigError("--engine spark needs --data DATASET_DIR (Parquet) and --out OUT_DIR (a folder)")
    from lstmcast.spark import predict_dataset  # pandas, pyarrow and pyspark: only for this engine

    def progress(done: int, total: int) -> None:
        typer.echo(f"{done}/{total} parts done", err=True)
    res = predict_dataset(run, data, out, future, master=master, rows_per_part=rows_per_part, on_part=progress)
    m = res.manifest
    typer.echo(f"{m.get('forecast_rows', 0)} forecast rows of {m.get('series', 0)} series, {m.get('errors', 0)} "
               f"series with errors ({out}/errors), in {m.get('parts', 0)} parts ({res.skipped} already done) "
               f"under {out}; manifest {out}/manifest.json")


@app.command()
def tune(data: Optional[str] = DataOpt, time_col: Optional[str] = TimeOpt, target: Optional[str] = TargetOpt,
         features: Optional[str] = FeatOpt, id_col: Optional[str] = IdOpt, window: Optional[int] = WindowOpt,
         horizon: Optional[int] = HorizonOpt, season: Optional[int] = SeasonOpt,
         config: Optional[Path] = ConfigOpt, overrides: Optional[list[str]] = SetOpt,
         trials: Optional[int] = typer.Option(None, "--trials", help="Trials in the study, all workers together "
                                              "(default tune.trials: 20)."),
         timeout: Optional[str] = typer.Option(None, "--timeout", help="Start no trial after this long: 90s, 30m, 2h."),
         run: Optional[Path] = typer.Option(None, "--run", help="Tuning folder (default runs/tune-<timestamp>); "
                                            "the same folder resumes the study."),
         objective: Optional[str] = typer.Option(None, "--objective", help="val (validation loss, default) or mase "
                                                 "(backtest MASE on the test split)."),
         pruner: Optional[str] = typer.Option(None, "--pruner", help="hyperband (default), median or none."),
         storage: Optional[str] = typer.Option(None, "--storage", help="SQLAlchemy URL of the study (default: "
                                               "sqlite file RUN/study.db); postgresql://... for many machines."),
         study: str = typer.Option("lstmcast", "--study", help="Study name inside the storage."),
         threads: Optional[int] = typer.Option(None, "--threads", min=1, help="Torch threads per trial "
                                               "(default: cores // live workers in RUN/workers)."),
         workers_per_machine: Optional[int] = typer.Option(
             None, "--workers-per-machine", min=1, help="Workers sharing this machine's cores (default: counted)."),
         future_features: Optional[str] = FutureOpt, static_features: Optional[str] = StaticOpt,
         levels: Optional[str] = LevelsOpt, missing: Optional[str] = MissingOpt) -> None:
    """Search the guide's LSTM space with Optuna (pruning, resumable, many workers); write best.yaml."""
    overrides = with_flags(levels, missing, with_roles(future_features, static_features, overrides))

    def _do() -> None:
        from lstmcast.tuning.storage import redact
        from lstmcast.tuning.study import TuneOptions, Tuner, no_best_trial_error, parse_duration, route_optuna_logs

        extra = [f"tune.{k}={v}" for k, v in (("trials", trials), ("objective", objective), ("pruner", pruner))
                 if v is not None]
        cfg = build_config(config, data, time_col, target, features, id_col, window, horizon, season,
                           list(overrides or []) + extra)
        run_dir = run or Path("runs") / datetime.now().strftime("tune-%Y%m%d-%H%M%S")
        opts = TuneOptions(run_dir=run_dir, storage=storage, study_name=study, threads=threads,
                           timeout_s=parse_duration(timeout) if timeout else None,
                           workers_per_machine=workers_per_machine)
        route_optuna_logs()
        with Tuner(cfg, opts) as tuner:
            print_space(tuner.space)
            t = cfg.tune
            typer.echo(f"study {study!r} in {redact(tuner.url)}: {t.trials} trials, objective {t.objective}, "
                       f"pruner {t.pruner}, up to {t.max_epochs} epochs each, {tuner.threads()} threads per trial")
            summary = tuner.run(on_trial=print_trial)
        print_best(summary)
        print_stop(summary, cfg.tune.trials, timeout)
        if summary["best"] is None:
            raise no_best_trial_error(summary)
        typer.echo(f"results in {run_dir}: best.yaml, trials.csv, summary.json, history.png, importances.png")
        typer.echo(f"train the best: lstmcast train -c {run_dir / 'best.yaml'}")

    run_guarded(_do)


@app.command("doctor")
def doctor_cmd(data: Optional[str] = DataOpt, time_col: Optional[str] = TimeOpt, target: Optional[str] = TargetOpt,
               features: Optional[str] = FeatOpt, id_col: Optional[str] = IdOpt, window: Optional[int] = WindowOpt,
               horizon: Optional[int] = HorizonOpt, season: Optional[int] = SeasonOpt,
               config: Optional[Path] = ConfigOpt, overrides: Optional[list[str]] = SetOpt,
               as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
               measure: bool = typer.Option(False, "--measure", help="Time a few real training steps here."),
               future_features: Optional[str] = FutureOpt, static_features: Optional[str] = StaticOpt,
               levels: Optional[str] = LevelsOpt, missing: Optional[str] = MissingOpt) -> None:
    """Check a config and its data before training: shape trace, parameters, memory, FLOPs, the guide's advice.

    Exit 0 with advice only, 2 when an error finding would make training fail.
    """
    overrides = with_flags(levels, missing, with_roles(future_features, static_features, overrides))

    def _do() -> int:
        from lstmcast.doctor.report import doctor, render

        raw = build_config(config, data, time_col, target, features, id_col, window, horizon, season, overrides,
                           validate=False)
        report = doctor(raw, measure=measure)
        if as_json:
            typer.echo(json.dumps(report.as_dict(), indent=2))
        else:
            from rich.console import Console

            Console().print(*render(report))
        for f in report.errors:  # the same text `train` stops with
            typer.echo(f"error: {f.message}" + (f": {f.fix}" if f.fix else ""), err=True)
        if not as_json:
            typer.echo(f"{len(report.errors)} error(s): training would stop" if report.errors else
                       f"no errors; {len(report.findings)} finding(s) of advice")
        return 2 if report.errors else 0

    code = run_guarded(_do)
    if code:
        raise typer.Exit(code)


@app.command()
def report(run: Path = typer.Argument(..., help="Run folder written by `lstmcast train`."),
           out: Optional[str] = typer.Option(None, "--out",
                                             help="Output HTML file (default RUN/report.html).")) -> None:
    """Write RUN/report.html: plots, gates, backtest and diagnosis of a run in one self-contained page."""

    def _do() -> None:
        from lstmcast.report.html import write_report

        typer.echo(f"report written to {write_report(run, out)}")

    run_guarded(_do)


@app.command("export")
def export_cmd(run: Path = typer.Argument(..., help="Run folder written by `lstmcast train`."),
               out: Optional[str] = typer.Option(None, "--out", help="ONNX file (default RUN/model.onnx); "
                                                  "export.json is written beside it.")) -> None:
    """Export a run to ONNX (+ export.json with the scaler and recipe), checked against PyTorch.

    Needs the `export` extra (pip install 'lstmcast\\[export]'); without it exits 2.
    """

    def _do() -> None:
        from lstmcast.export import TOLERANCE, export_run

        res = export_run(run, out)
        shown = ", ".join(f"B={b}: {d:.3g}" for b, d in res.diffs.items())
        typer.echo(f"parity with PyTorch: max |diff| {res.max_abs_diff:.3g} <= {TOLERANCE:g} ({shown})")
        typer.echo(f"ONNX model (opset {res.opset}, sha256 {res.sha256[:12]}...) written to {res.onnx_path}")
        typer.echo(f"deployment spec (channels, scaler, recipe) written to {res.spec_path}")

    run_guarded(_do)


@app.command()
def serve(run: Path = typer.Argument(..., help="Run folder written by `lstmcast train` (verified, then fixed)."),
          host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on; any but loopback needs a "
                                   "token."),
          port: int = typer.Option(8000, "--port", min=0, max=65535, help="Port (0: a free one, printed)."),
          token_file: Optional[Path] = typer.Option(None, "--token-file", help="File whose first line is the bearer "
                                                    "token (or set LSTMCAST_SERVE_TOKEN)."),
          max_body_mb: float = typer.Option(4.0, "--max-body", min=0.001, help="Largest request body in MB (413 "
                                            "beyond)."),
          timeout: float = typer.Option(30.0, "--timeout", min=0.001, help="Seconds a request may take (503 "
                                        "beyond)."),
          max_batch: int = typer.Option(64, "--max-batch", min=1, help="Most requests merged into one forward."),
          max_wait_ms: float = typer.Option(0.0, "--max-wait-ms", min=0.0, help="Milliseconds a request may wait "
                                            "for others to share its forward (0: batches form only under load)."),
          threads: Optional[int] = typer.Option(None, "--threads", min=1, help="Torch threads (default "
                                                "train.threads, else the cores available).")) -> None:
    """Serve a run over HTTP: POST /v1/forecast, /v1/update; GET /v1/model, /healthz, /readyz, /metrics.

    Needs the `serve` extra (pip install 'lstmcast\\[serve]'). SIGTERM drains the requests in flight and exits 0.
    """

    def _do() -> int:
        from lstmcast.serve.auth import load_token

        token = load_token(token_file, host)  # an open address without a token: refused before torch loads
        try:
            from lstmcast.serve.server import serve as serve_run
        except ImportError as exc:
            from lstmcast.errors import ConfigError

            raise ConfigError(f"lstmcast serve needs the serve extra ({exc.name} is not installed): "
                              "pip install 'lstmcast[serve]'") from None
        from lstmcast.serve.app import Options

        opts = Options(max_body=int(max_body_mb * 1024 * 1024), timeout=timeout, max_batch=max_batch,
                       max_wait=max_wait_ms / 1e3, token=token)
        return serve_run(run, host, port, None, opts, threads,
                         announce=lambda url: typer.echo(f"serving {run} on {url} (SIGTERM or Ctrl+C stops)",
                                                         err=True))

    code = run_guarded(_do)
    if code:
        raise typer.Exit(code)


_GLOBAL_FLAGS = ("--debug", "-v", "--verbose")


def hoist_global_flags(argv: list[str]) -> list[str]:
    """``lstmcast train ... --debug`` as ``lstmcast --debug train ...``: the global flags work on either side of
    the subcommand (not after a ``--``, which ends the options).

    >>> hoist_global_flags(["train", "--data", "x.csv", "--debug"])
    ['--debug', 'train', '--data', 'x.csv']
    """
    end = argv.index("--") if "--" in argv else len(argv)
    flags = [a for a in argv[:end] if a in _GLOBAL_FLAGS]
    return flags + [a for a in argv[:end] if a not in _GLOBAL_FLAGS] + argv[end:]


def main() -> None:
    app(args=hoist_global_flags(sys.argv[1:]))


if __name__ == "__main__":
    main()
