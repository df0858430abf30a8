"""What pruning buys `lstmcast tune`: trials per hour and the best validation loss after the same wall time.

Studies on the bundled CO2 demo (resources/demo.yaml), one worker each, for the same wall-clock
budget: pruning off (``tune.pruner: none``) and on (``hyperband``, the default, or ``median``). They
run in alternating slices (the studies resume), so load from other processes hits them alike. Both use the same sampler
seed and search space; each trial trains at most ``--epochs`` epochs of at most ``--steps`` steps (the
demo series has ~45 steps of batch 32 per epoch). A trial counts when it finished (complete or
pruned); the trial running at the end of a slice finishes, and the wall time counts it. Prints both
rows (epochs/s shows the load each study saw) and the ratios measured in this run.

Usage: python benchmarks/tune_speed.py [--seconds 90] [--pruner hyperband|median|median,hyperband] [--threads N]
"""

from __future__ import annotations

import argparse
import logging
import math
import tempfile
import time
from pathlib import Path


def config(pruner: str, epochs: int, steps: int, threads: int | None):
    from lstmcast.config import apply_overrides, read_yaml_mapping, validate_config
    from lstmcast.data.io import bundled_path

    raw = read_yaml_mapping(bundled_path("demo.yaml"))
    raw["data"]["path"] = str(bundled_path())
    sets = [f"tune.pruner={pruner}", f"tune.max_epochs={epochs}", "tune.trials=100000",
            f"train.max_steps_per_epoch={steps}", f"train.patience={epochs}"]
    if threads:
        sets.append(f"train.threads={threads}")
    return validate_config(apply_overrides(raw, sets))


def run_studies(pruners: list[str], seconds: float, rounds: int, epochs: int, steps: int,
                threads: int | None) -> list[dict]:
    """Alternate the studies in ``rounds`` slices of ``seconds / rounds`` each (a resumed study goes on
    where it stopped), so that load from other processes hits every study alike."""
    from lstmcast.tuning.study import TuneOptions, Tuner

    tmp = tempfile.TemporaryDirectory()
    tuners = [Tuner(config(p, epochs, steps, threads), TuneOptions(run_dir=Path(tmp.name) / p)) for p in pruners]
    walls = [0.0] * len(pruners)
    try:
        for tuner in tuners:
            tuner.open()
        for _ in range(rounds):
            for i, tuner in enumerate(tuners):
                tuner.opts.timeout_s = seconds / rounds
                t0 = time.perf_counter()
                tuner.run()  # the trial running at the deadline finishes: wall counts it
                walls[i] += time.perf_counter() - t0
        return [summarise(p, t.study.get_trials(), w) for p, t, w in zip(pruners, tuners, walls)]
    finally:
        for tuner in tuners:
            tuner.close()
        tmp.cleanup()


def summarise(pruner: str, trials: list, wall: float) -> dict:
    from optuna.trial import TrialState

    done = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    values = [t.value for t in done if t.state == TrialState.COMPLETE and t.value is not None]
    epochs = sum(t.user_attrs.get("epochs", 0) for t in done)
    return {"pruner": pruner, "finished": len(done), "pruned": sum(t.state == TrialState.PRUNED for t in done),
            "epochs": epochs, "wall": wall, "per_hour": len(done) * 3600.0 / wall, "epochs_per_s": epochs / wall,
            "best": min(values) if values else math.nan}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=90.0, help="wall-clock budget of each study")
    ap.add_argument("--pruner", default="hyperband", help="pruner(s) to compare with none: median, hyperband "
                    "or median,hyperband")
    ap.add_argument("--rounds", type=int, default=3, help="alternating slices per study")
    ap.add_argument("--epochs", type=int, default=20, help="tune.max_epochs: epochs of an unpruned trial")
    ap.add_argument("--steps", type=int, default=5, help="train.max_steps_per_epoch")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: the cores this process may use)")
    ap.add_argument("--smoke", action="store_true",
                    help="a tiny run of every section, to check the script (CI runs every benchmark so)")
    args = ap.parse_args()
    if args.smoke:
        args.seconds, args.rounds, args.epochs, args.steps, args.threads = 6.0, 1, 2, 2, args.threads or 1
    logging.basicConfig(level=logging.WARNING)
    from lstmcast.tuning.study import route_optuna_logs

    route_optuna_logs()
    pruners = [p.strip() for p in args.pruner.split(",") if p.strip()]
    rows = run_studies(["none", *pruners], args.seconds, args.rounds, args.epochs, args.steps, args.threads)
    print(f"demo CO2 series, {args.seconds:.0f} s budget per study in {args.rounds} alternating slices, up to "
          f"{args.epochs} epochs x {args.steps} steps a trial")
    print(f"{'pruner':<10}{'trials':>8}{'pruned':>8}{'epochs':>8}{'wall s':>8}{'epochs/s':>10}{'trials/h':>10}"
          f"{'best val loss':>15}")
    for r in rows:
        print(f"{r['pruner']:<10}{r['finished']:>8}{r['pruned']:>8}{r['epochs']:>8}{r['wall']:>8.0f}"
              f"{r['epochs_per_s']:>10.2f}{r['per_hour']:>10.0f}{r['best']:>15.5g}")
    off = rows[0]
    for on in rows[1:]:
        ratio = on["per_hour"] / off["per_hour"] if off["per_hour"] else math.inf
        print(f"pruning {on['pruner']} on/off: {ratio:.2f}x trials per hour; best validation loss "
              f"{on['best']:.5g} (on) vs {off['best']:.5g} (off) after {on['wall']:.0f} s vs {off['wall']:.0f} s")


if __name__ == "__main__":
    main()
