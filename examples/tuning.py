"""Hyperparameter search with Optuna (pruning, resumable): three short trials, then the best config.
The same as `lstmcast tune --data examples/data/load_hourly.csv --time-col time --target load --trials 3`.

    python examples/tuning.py
"""

from pathlib import Path

from lstmcast.config import validate_config
from lstmcast.tuning.study import Tuner, TuneOptions, route_optuna_logs

DATA = Path(__file__).resolve().parent / "data"
config = validate_config({
    "data": {"path": str(DATA / "load_hourly.csv"), "time_col": "time", "target": "load", "horizon": 24},
    "tune": {"trials": 3, "max_epochs": 3},  # tiny: raise both for a real search
})
route_optuna_logs()  # optuna's own messages through logging, as the CLI does
with Tuner(config, TuneOptions(run_dir=Path("runs/example-tune"))) as tuner:
    summary = tuner.run(on_trial=lambda t: print(f"[{t.done} of {t.total}] trial {t.number}: {t.state} {t.value}"))
print("best:", summary["best"])
print("train it: lstmcast train -c runs/example-tune/best.yaml")
