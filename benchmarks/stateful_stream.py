"""Streaming with a carried state (model.stateful, issue 24): what one new observation costs.

1. Per new observation, for 1 and 10,000 series: ``Forecaster.update(new rows) + predict()`` of a stateful model
   against today's window ``predict(last L rows)`` of a window model of the same size (hidden 64, 2 layers,
   L = 96, H = 24). LSTM steps are counted by forward hooks on the nn.LSTM modules (series x sequence steps per
   layer); wall time is the public call's. Targets: >= 20x fewer LSTM steps and >= 5x less wall time.
2. Updates/s at 100,000 series of one new row each: the carried-state core (inference/stateful.advance: the
   rows scaled, one LSTM step a layer, the states stored) and the public ``Forecaster.update`` (the table read
   and validated too) against a bare batched ``nn.LSTM`` single step of the same size on tensors already in
   place (target >= 0.5x for the core).

Models are fitted with a token budget (one epoch of a few steps): costs do not depend on the weights.
Each wall time is the median of ``ROUNDS`` rounds after one warm-up; in part 1 the two sides alternate within
each round (one call each) and the mean CPU time of each is printed beside it. Ratios come from one run of this
script. Part 1 also runs one series without an id column (the single layout: the window predict's own fast path).

Usage: python benchmarks/stateful_stream.py [--quick] [--smoke]
  --quick: 1 and 2,000 series in part 1, 20,000 in part 2; --smoke: a tiny run of every part (seconds).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

L, H, HIDDEN, LAYERS = 96, 24, 64, 2
ROUNDS = 7  # one torch thread (train.threads: 1 below), as benchmarks/quality.py runs its workers


def make_table(n_series: int, points: int, seed: int = 0):
    import pandas as pd

    rng = np.random.default_rng(seed)
    t = np.arange(points)
    ids = np.repeat([f"s{i:06d}" for i in range(n_series)], points)
    phase = rng.uniform(0, 2 * np.pi, n_series)[:, None]
    y = 10 + 3 * np.sin(2 * np.pi * t[None, :] / 24 + phase) + 0.3 * rng.standard_normal((n_series, points))
    times = np.tile(pd.date_range("2024-01-01", periods=points, freq="h").to_numpy(), n_series)
    return pd.DataFrame({"id": ids, "time": times, "y": y.reshape(-1)})


def fit(table, stateful: bool):
    from lstmcast import Forecaster

    id_col = "id" if "id" in table.columns else None
    model = {"hidden_size": HIDDEN, "num_layers": LAYERS, "dropout": 0.0}
    model.update({"stateful": True} if stateful else {})
    cfg = {"data": {"time_col": "time", "target": "y", "id_col": id_col, "window": L, "horizon": H, "season": 24,
                    "calendar": "none"},
           "model": model,
           "train": {"max_epochs": 1, "max_steps_per_epoch": 2, "min_steps": 0, "min_epoch_steps": 1, "refit": False,
                     "precision": "fp32", "accel": "eager", "device": "cpu", "batch_size": 64, "tbptt_steps": 32,
                     "threads": 1,  # one thread: two threads on a shared, loaded machine wait on each other
                     "val_windows": 256, "windows_per_epoch": 256},
           "monitor": {"tensorboard": False}}
    return Forecaster(cfg).fit(table, progress=False)


class StepCounter:
    """Series x sequence steps through each nn.LSTM of a model, divided by its layers, plus the fused cell steps
    (``torch.lstm_cell``, one layer's step of a batch each) that an update of one new row takes instead: LSTM
    steps per layer."""

    def __init__(self, model) -> None:
        import torch

        self.steps = 0
        self.lstms = [m for m in model.modules() if isinstance(m, torch.nn.LSTM)]
        self.layers = sum(m.num_layers for m in self.lstms)
        self.handles = [m.register_forward_pre_hook(self._hook) for m in self.lstms]
        self.cell = torch.lstm_cell

        def cell(x, *args):
            self.steps += int(x.shape[0])
            return self.cell(x, *args)
        torch.lstm_cell = cell

    def _hook(self, module, args) -> None:
        x = args[0]
        self.steps += int(x.shape[0] * x.shape[1]) * module.num_layers

    def per_layer(self) -> float:
        return self.steps / self.layers

    def close(self) -> None:
        import torch

        torch.lstm_cell = self.cell
        for h in self.handles:
            h.remove()


def timed(fn) -> float:
    fn()  # warm-up
    out = []
    for _ in range(ROUNDS):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def interleaved(a, b) -> tuple[float, float, float, float]:
    """Median wall and mean CPU seconds of ``a`` and of ``b``, one call of each a round, alternating which goes
    first (a loaded machine's slow spells fall on both sides)."""
    a(), b()  # warm-up
    wall: dict[int, list[float]] = {0: [], 1: []}
    cpu = [0.0, 0.0]
    for r in range(ROUNDS):
        for k in ((0, 1) if r % 2 == 0 else (1, 0)):
            fn = (a, b)[k]
            c0, t0 = time.process_time(), time.perf_counter()
            fn()
            wall[k].append(time.perf_counter() - t0)
            cpu[k] += time.process_time() - c0
    return statistics.median(wall[0]), statistics.median(wall[1]), cpu[0] / ROUNDS, cpu[1] / ROUNDS


def per_observation(n_series: int, history: int, id_col: bool = True) -> dict:
    """Part 1: one new row for each of ``n_series`` series; window predict vs update + predict. ``id_col`` False:
    one series in a table without an id column (the single layout, where the window predict has its fast path).
    The rows of each round are cut from the table before the clock starts (on both sides)."""
    table = make_table(n_series, history + ROUNDS + 3)
    pos = table.groupby("id").cumcount().to_numpy()
    if not id_col:
        table = table.drop(columns="id")
    hist = table[pos < history]
    win, st = fit(hist, False), fit(hist, True)
    st.predict()  # the carried states after the history (built once, as `lstmcast train` leaves them)
    rounds = iter([table[pos == k] for k in range(history, history + ROUNDS + 3)])
    recent = table[(pos >= history - L + 1) & (pos <= history)]  # the window model's input after one new row

    def window_predict():
        win.predict(recent)

    def stream():
        st.update(next(rounds))
        st.predict()
    count = StepCounter(win.model_)
    window_predict()
    w_steps = count.per_layer() / n_series
    count.close()
    count = StepCounter(st.model_)
    stream()
    s_steps = count.per_layer() / n_series
    count.close()
    w_s, s_s, w_cpu, s_cpu = interleaved(window_predict, stream)
    return {"series": n_series, "window_steps": w_steps, "stream_steps": s_steps, "window_s": w_s, "stream_s": s_s,
            "window_cpu": w_cpu, "stream_cpu": s_cpu}


def updates_per_s(n_series: int) -> dict:
    """Part 2: one row for each of ``n_series`` series: the carried-state core and the public update against a bare
    batched nn.LSTM single step."""
    import torch

    from lstmcast.inference import stateful

    table = make_table(n_series, 3 + ROUNDS + 2)
    pos = table.groupby("id").cumcount().to_numpy()
    fc = fit(make_table(8, 3 * L), True)
    fc.update(table[pos < 3])  # every series seen: states from three rows each
    series_at = {k: stateful.read_update(table[pos == k], fc.config_, fc.meta_) for k in range(3, 3 + ROUNDS + 2)}
    states = fc.carried_states()
    it = iter(range(3, 3 + ROUNDS + 2))

    def core():
        nonlocal states
        states, _ = stateful.update(fc.model_, states, series_at[next(it)], fc.meta_, fc.scaler_)
    core_s = timed(core)
    it2 = iter(range(3, 3 + ROUNDS + 2))
    fc.states_ = None
    fc.update(table[pos < 3])

    def public():
        fc.update(table[pos == next(it2)], persist=False)
    public_s = timed(public)
    lstm = torch.nn.LSTM(fc.model_.input_size, HIDDEN, LAYERS, batch_first=True).eval()
    x = torch.randn(n_series, 1, fc.model_.input_size)
    h = torch.zeros(LAYERS, n_series, HIDDEN)
    state = (h, h.clone())

    def bare():
        with torch.inference_mode():
            lstm(x, state)
    bare_s = timed(bare)
    return {"series": n_series, "core_per_s": n_series / core_s, "public_per_s": n_series / public_s,
            "bare_per_s": n_series / bare_s}


def main() -> None:
    global ROUNDS, L, H, HIDDEN
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1 and 2,000 series; 20,000 for updates/s")
    ap.add_argument("--smoke", action="store_true", help="a tiny run of every part, to check the script")
    args = ap.parse_args()
    sizes, big = [1, 10_000], 100_000
    if args.quick:
        sizes, big = [1, 2_000], 20_000
    if args.smoke:
        sizes, big, ROUNDS, L, H, HIDDEN = [5], 200, 1, 12, 4, 8
    import torch

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores visible; "
          f"hidden {HIDDEN}, {LAYERS} layers, L={L}, H={H}", flush=True)
    print("part 1: per new observation, window predict vs update + predict", flush=True)
    for n, id_col in [(1, False)] + [(n, True) for n in sizes]:
        r = per_observation(n, 3 * L + 2 * H, id_col)
        label = f"{r['series']:>6} series" + ("" if id_col else " (no id column)")
        print(f"  {label}: LSTM steps per series {r['window_steps']:.0f} vs {r['stream_steps']:.0f} "
              f"({r['window_steps'] / max(r['stream_steps'], 1e-9):.0f}x fewer, target >= 20x); wall "
              f"{r['window_s'] * 1e3:.1f} ms vs {r['stream_s'] * 1e3:.1f} ms "
              f"({r['window_s'] / r['stream_s']:.1f}x less, target >= 5x); CPU {r['window_cpu'] * 1e3:.1f} ms vs "
              f"{r['stream_cpu'] * 1e3:.1f} ms ({r['window_cpu'] / r['stream_cpu']:.1f}x)", flush=True)
    print(f"part 2: updates/s at {big:,} series, one row each", flush=True)
    r = updates_per_s(big)
    print(f"  core {r['core_per_s']:,.0f}/s, public update {r['public_per_s']:,.0f}/s, bare nn.LSTM step "
          f"{r['bare_per_s']:,.0f}/s: core {r['core_per_s'] / r['bare_per_s']:.2f}x (target >= 0.5x), public "
          f"{r['public_per_s'] / r['bare_per_s']:.2f}x", flush=True)


if __name__ == "__main__":
    sys.exit(main())
