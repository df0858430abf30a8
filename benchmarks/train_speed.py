"""lstmcast against a bare PyTorch loop on the same model, data and steps (CPU).

Prints, from one run:
- training steps/s of lstmcast's Trainer vs a hand-written loop, interleaved A/B rounds in one process,
  at (L=96, B=32, hidden 64x2) and (L=8, B=32): lines ending ``ratio X.XX`` (ours / bare); both sides use
  the same optimizer settings (AdamW fused, TrainConfig's lr / weight decay / clipping);
- end to end: ``Forecaster.fit`` configured to the bare loop's work (hidden 64x2, no fitted skip, no refit,
  no step minimum, 3 epochs; validation, early stopping, window normalisation, dropout and the preflight as
  a user gets them), precision fp32 and auto, against a bare fused-AdamW loop doing the same epochs of the
  same number of optimizer steps with a validation pass each: ``end-to-end ... ratio X.XX`` (bare / fit, wall
  time; then the CPU-time ratio, which a machine loaded by other processes distorts less); the bare loop runs
  in the same process, so it shares the malloc thresholds lstmcast's first fit set (``train.allocator``);
- what ``train.allocator: auto`` itself buys: ``Forecaster.fit`` of the end-to-end work in fresh processes,
  auto against ``system``, first and second fit of a process, with their minor page faults: ``allocator ...
  ratio X.XX`` (system time / auto time);
- peak memory added by fitting a 5-million-point series at L=96, against the raw data size;
- single-series ``Forecaster.predict`` latency p50 through the public API on a loaded model, per frequency
  (half-hourly, hourly, daily, weekly, monthly; calendar channels where the frequency has them), and the bare
  forward pass on the same model input (target <= 1.5 ms);
- ``precision: auto`` (measured probe) against the bare fp32 loop (``ratio``), and the backtest MASE of
  auto vs fp32 on the bundled CO2 demo (demo.yaml).

Usage: python benchmarks/train_speed.py [--quick | --smoke] [--only SECTION]
(``--smoke``: every section at a toy size, numbers meaningless; CI runs it, tests/integration/test_benchmarks_smoke.py)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np


def series(n: int = 4032, seed: int = 0) -> np.ndarray:
    """A half-hourly-like series (daily + weekly cycles + noise), standardised, float32 (n, 1)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    y = np.sin(2 * np.pi * t / 48) + 0.5 * np.sin(2 * np.pi * t / 336) + 0.2 * rng.standard_normal(n)
    return ((y - y.mean()) / y.std()).astype(np.float32)[:, None]


def bare_model(C, H, hidden, layers, dropout=0.0, seed=0):
    """nn.LSTM + a Linear head on the last step, and the optimizer a careful engineer would pick: the
    settings lstmcast's Trainer uses (AdamW fused, TrainConfig's lr and weight decay), so only the code
    around them differs."""
    import torch
    from torch import nn

    from lstmcast.config import TrainConfig

    d = TrainConfig()
    torch.manual_seed(seed)
    lstm = nn.LSTM(C, hidden, layers, batch_first=True, dropout=dropout if layers > 1 else 0.0)
    head = nn.Linear(hidden, H)
    params = list(lstm.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=d.lr, weight_decay=d.weight_decay, fused=True)
    return lstm, head, params, opt, d.clip_norm


def bare_loop(data, L, H, B, hidden, layers, seed=0):
    """The floor: bare_model's LSTM, MSE, clip as TrainConfig, unfold windows, index gather."""
    import torch
    from torch import nn

    lstm, head, params, opt, clip = bare_model(data.shape[1], H, hidden, layers, seed=seed)
    windows = data.unfold(0, L + H, 1)  # (N - L - H + 1, C, L + H)
    n = windows.shape[0]

    def step():
        idx = torch.randint(0, n, (B,))
        w = windows[idx]
        x, y = w[:, :, :L].transpose(1, 2), w[:, 0, L:]
        out, _ = lstm(x)
        loss = nn.functional.mse_loss(head(out[:, -1]), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, clip)
        opt.step()

    return step


def ours(data, L, H, B, hidden, layers, steps, seed=0):
    """lstmcast's Trainer on the same data: one timed call runs ``steps`` steps of run_epoch."""
    import torch

    from lstmcast.config import TrainConfig
    from lstmcast.data.windows import Roles
    from lstmcast.model.network import LSTMForecaster
    from lstmcast.training.accel import resolve
    from lstmcast.training.loop import Trainer
    from lstmcast.training.records import TrainData

    accel = resolve("cpu", "fp32", torch.get_num_threads())
    cfg = TrainConfig(batch_size=B, max_steps_per_epoch=steps, seed=seed, precision="fp32")
    model = LSTMForecaster(data.shape[1], 1, H, hidden, layers, dropout=0.0, window_norm="none")
    n = data.shape[0] - L - H + 1
    trainer = Trainer(model, cfg, accel, TrainData.of(data, torch.arange(n), torch.arange(0), Roles(L, H, 1)))
    if trainer.steps_per_epoch() != steps:
        raise SystemExit(f"benchmark set-up: an epoch holds {trainer.steps_per_epoch()} steps, not {steps}")
    return lambda: trainer.run_epoch()


def interleaved(bare_step, ours_epoch, steps: int, rounds: int) -> tuple[float, float]:
    """Median steps/s of ``steps`` bare steps and one lstmcast epoch of ``steps`` steps, alternated."""
    for _ in range(10):  # warm-up both
        bare_step()
    ours_epoch()
    t_bare, t_ours = [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(steps):
            bare_step()
        t_bare.append(steps / (time.perf_counter() - t0))
        t0 = time.perf_counter()
        ours_epoch()
        t_ours.append(steps / (time.perf_counter() - t0))
    return statistics.median(t_bare), statistics.median(t_ours)


def speed(L, B, hidden=64, layers=2, H=1, steps=100, rounds=5):
    import torch

    data = torch.from_numpy(series())
    bare = bare_loop(data, L, H, B, hidden, layers)
    mine = ours(data, L, H, B, hidden, layers, steps)
    b, o = interleaved(bare, mine, steps, rounds)
    print(f"train speed L={L} B={B} hidden {hidden}x{layers}: bare {b:.1f} steps/s, lstmcast {o:.1f} steps/s, "
          f"ratio {o / b:.2f}", flush=True)
    return o / b


def _fit_fair(df, L, H, epochs, precision):
    """``Forecaster.fit`` configured to the bare loop's work: hidden 64x2, the bare loop's one input channel (no
    calendar channels: half-hourly data would add four), no fitted linear skip, no refit, no step minimum,
    ``epochs`` epochs; everything else (validation, early stopping, window normalisation, dropout, the doctor's
    preflight, ``precision: auto`` with its probe) as a user gets it."""
    from lstmcast import Forecaster

    t0, c0 = time.perf_counter(), time.process_time()
    fc = Forecaster({"data": {"time_col": "time", "target": "y", "window": L, "horizon": H, "calendar": "none"},
                     "model": {"hidden_size": 64, "num_layers": 2, "linear_skip": False},
                     "train": {"max_epochs": epochs, "min_steps": 0, "refit": False,
                               "precision": precision}}).fit(df, progress=False)
    return time.perf_counter() - t0, time.process_time() - c0, fc


def _bare_fit(values, L, H, m, epochs, steps, n_train, val_starts, B=32):
    """A bare loop doing what the fit did: ``epochs`` epochs of ``steps`` shuffled steps on the training
    windows, a no-grad validation pass over the validation windows after each, scaling the data first."""
    import torch
    from torch import nn

    t0, c0 = time.perf_counter(), time.process_time()
    x = torch.from_numpy(((values - values[:n_train].mean()) / values[:n_train].std()).astype(np.float32))[:, None]
    windows = x.unfold(0, L + H, 1)  # (N - L - H + 1, C, L + H)
    lstm, head, params, opt, clip = bare_model(1, H, m.hidden_size, m.num_layers, m.dropout)
    n_windows = n_train - L - H + 1
    val_idx = torch.from_numpy(val_starts)

    def loss_of(idx):
        w = windows[idx]
        out, _ = lstm(w[:, :, :L].transpose(1, 2))
        return nn.functional.mse_loss(head(out[:, -1]), w[:, 0, L:])

    for _ in range(epochs):
        lstm.train()
        order = torch.randperm(n_windows)
        for k in range(steps):
            loss = loss_of(order[k * B:(k + 1) * B])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, clip)
            opt.step()
        lstm.eval()
        with torch.no_grad():
            sum(float(loss_of(val_idx[i:i + 2048])) for i in range(0, len(val_idx), 2048))
    return time.perf_counter() - t0, time.process_time() - c0


def _warm_up(df, values, H, L, epochs):
    """One untimed fit and bare run of the timed size: the first fit in a process paid the process's one-time
    imports (the fused optimizer's first construction imports torch._dynamo) that the bare loop after it found
    done, and the first full-size runs of a process are slower on both sides (on a quiet machine three fits in a
    row took 6.1, 4.9 and 3.7 s: allocator and kernel caches warming up), which decided the first rounds."""
    _, _, fc = _fit_fair(df, L, H, epochs, "fp32")
    _bare_fit(*_bare_work(values, L, H, fc))
    return fc


def _bare_work(values, L, H, fc) -> tuple:
    """``_bare_fit``'s arguments for the work ``fc``'s fit did: its epochs, steps and validation windows."""
    hist, prep = fc.history_, fc.prepared_
    return values, L, H, fc.config_.model, len(hist), hist[0]["steps"], prep.splits[0].train_end, prep.index.val


def end_to_end(L=96, H=1, epochs=3, rounds=5, n=4032, precisions=("fp32", "auto")):
    """Forecaster.fit configured to the bare loop's work (_fit_fair) against the bare loop on the same epochs,
    steps and validation windows, once per precision; rounds interleaved so a shared machine's drifts hit both."""
    import pandas as pd
    import torch

    values = series(n)[:, 0].astype(np.float64)
    df = pd.DataFrame({"time": pd.date_range("2024-01-01", periods=len(values), freq="30min"), "y": values})
    work = _bare_work(values, L, H, _warm_up(df, values, H, L, epochs))
    out = {}
    for precision in precisions:
        ratios, fits, bares, cpu_ratios = [], [], [], []
        for r in range(rounds):
            if r % 2:  # ABBA: the order flips every round, so a drift of the machine within a round hits both sides
                t_bare, c_bare = _bare_fit(*work)
                t_fit, c_fit, fc = _fit_fair(df, L, H, epochs, precision)
            else:
                t_fit, c_fit, fc = _fit_fair(df, L, H, epochs, precision)
                t_bare, c_bare = _bare_fit(*_bare_work(values, L, H, fc))
            work = _bare_work(values, L, H, fc)  # the same every round (fixed epochs, no early stop in 3)
            prep, hist = fc.prepared_, fc.history_
            fits.append(t_fit)
            bares.append(t_bare)
            ratios.append(t_bare / t_fit)
            cpu_ratios.append(c_bare / c_fit)
            print(f"  round ({precision}): fit {t_fit:.2f} s, bare {t_bare:.2f} s, ratio {t_bare / t_fit:.2f}; "
                  f"CPU time fit {c_fit:.2f} s, bare {c_bare:.2f} s, ratio {c_bare / c_fit:.2f} "
                  f"({torch.get_num_threads()} threads, load {os.getloadavg()[0]:.1f})", flush=True)
        print(f"end-to-end L={L} H={H}, {len(hist)} epochs of {hist[0]['steps']} steps + validation "
              f"({len(prep.index.val)} windows), hidden {fc.config_.model.hidden_size}x{fc.config_.model.num_layers}, "
              f"no skip, no refit, min_steps 0: Forecaster.fit (precision {precision} -> "
              f"{fc.training_.accel.precision}) "
              f"{statistics.median(fits):.2f} s, bare fused-AdamW loop {statistics.median(bares):.2f} s, ratio "
              f"{statistics.median(ratios):.2f} (bare time / fit time; < 1 = lstmcast slower; CPU-time ratio "
              f"{statistics.median(cpu_ratios):.2f}, which a loaded machine distorts less; geometric mean of the "
              f"rounds' ratios {statistics.geometric_mean(ratios):.2f})", flush=True)
        out[precision] = statistics.median(ratios)
    return out


_ALLOCATOR_CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[1])
import numpy as np, pandas as pd
import train_speed as ts
from lstmcast import Forecaster
L, n, epochs, allocator = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
values = ts.series(n)[:, 0].astype(np.float64)
df = pd.DataFrame({"time": pd.date_range("2024-01-01", periods=len(values), freq="30min"), "y": values})
out = []
for _ in range(2):  # the first fit of a process (what one `lstmcast train` runs), then a second one
    f0, t0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
    Forecaster({"data": {"time_col": "time", "target": "y", "window": L, "horizon": 1, "calendar": "none"},
                "model": {"hidden_size": 64, "num_layers": 2, "linear_skip": False},
                "train": {"max_epochs": epochs, "min_steps": 0, "refit": False, "precision": "fp32",
                          "allocator": allocator}}).fit(df, progress=False)
    out.append([time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0])
print(json.dumps(out))
"""


def allocator(L=96, n=4032, epochs=3, rounds=2) -> float:
    """``train.allocator`` auto against system: the end-to-end fit in fresh processes (ABBA rounds), each process
    fitting twice; the variables that make lstmcast leave malloc alone are removed from the children's environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k not in ("GLIBC_TUNABLES",)}
    here = os.path.dirname(os.path.abspath(__file__))
    runs: dict[str, list] = {"auto": [], "system": []}
    for r in range(rounds):
        for policy in (("auto", "system") if r % 2 == 0 else ("system", "auto")):
            out = subprocess.run([sys.executable, "-c", _ALLOCATOR_CHILD, here, str(L), str(n), str(epochs), policy],
                                 capture_output=True, text=True, check=True, env=env)
            runs[policy].append(json.loads(out.stdout.strip().splitlines()[-1]))
    med = {p: [statistics.median(run[k][0] for run in v) for k in (0, 1)] for p, v in runs.items()}
    faults = {p: [statistics.median(run[k][1] for run in v) for k in (0, 1)] for p, v in runs.items()}
    for k, which in enumerate(("first", "second")):
        print(f"allocator: {which} Forecaster.fit of a fresh process (the end-to-end work), {rounds} rounds: "
              f"train.allocator auto {med['auto'][k]:.2f} s ({faults['auto'][k] / 1e3:.0f}k minor page faults), "
              f"system {med['system'][k]:.2f} s ({faults['system'][k] / 1e3:.0f}k), ratio "
              f"{med['system'][k] / med['auto'][k]:.2f} (system time / auto time; > 1 = auto faster)", flush=True)
    return med["system"][0] / med["auto"][0]


_MEMORY_CHILD = r"""
import json, resource, sys, numpy as np, pandas as pd, torch
import lstmcast
from lstmcast import Forecaster
def status_mb(key):
    for line in open('/proc/self/status'):
        if line.startswith(key): return int(line.split()[1]) / 1024
rss_mb = lambda: status_mb('VmRSS')
hwm_mb = lambda: status_mb('VmHWM')
n = int(sys.argv[1])
import lstmcast.forecaster, lstmcast.data.validate, lstmcast.training.loop  # all imports before the baseline
Forecaster({"data": {"time_col": "t", "target": "y", "window": 8, "horizon": 2},
            "train": {"max_epochs": 1, "max_steps_per_epoch": 1}}).fit(
    pd.DataFrame({"t": pd.date_range("2000-01-01", periods=200, freq="min"), "y": np.zeros(200)}))
base = rss_mb()
rng = np.random.default_rng(0)
df = pd.DataFrame({"t": pd.date_range("2000-01-01", periods=n, freq="min"),
                   "y": np.sin(np.arange(n) / 50.0) + 0.1 * rng.standard_normal(n)})
raw_mb = df.memory_usage(index=False, deep=True).sum() / 2**20
after_df = rss_mb()
with open('/proc/self/clear_refs', 'w') as fh:  # reset the peak (VmHWM): measure fitting, not pandas' frame build
    fh.write('5')
Forecaster({"data": {"time_col": "t", "target": "y", "window": 96, "horizon": 24, "season": 60},
            "model": {"hidden_size": 32, "num_layers": 1, "dropout": 0.0},
            "train": {"max_epochs": 1, "max_steps_per_epoch": 20}}).fit(df)
peak = hwm_mb()
print(json.dumps({"base": base, "raw": raw_mb, "after_df": after_df, "peak": peak}))
"""


def memory(n: int = 5_000_000) -> None:
    out = subprocess.run([sys.executable, "-c", _MEMORY_CHILD, str(n)], capture_output=True, text=True, check=True)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    added = r["peak"] - r["base"]  # above the process after imports, the user's DataFrame included
    windows_mb = (n - 96 - 24 + 1) * (96 + 24) * 4 / 2**20
    print(f"memory: {n:,}-point series at L=96: raw data {r['raw']:.0f} MB (the user's DataFrame); peak while "
          f"fitting, above the process before the data existed: {added:.0f} MB (budget raw + 300 = "
          f"{r['raw'] + 300:.0f} MB, ratio {added / (r['raw'] + 300):.2f}); materialised windows alone would take "
          f"{windows_mb:,.0f} MB", flush=True)


# frequency -> season of the synthetic series: a one-series predict per regular frequency
LATENCY_FREQS = {"30min": 48, "h": 24, "D": 7, "W-SUN": 52, "MS": 12}
# data.calendar 'auto' adds channels only below a day: daily and longer steps are also measured with these
LATENCY_CALENDARS = {"D": ["day_of_week", "day_of_month"], "W-SUN": ["week_of_year", "month_of_year"],
                     "MS": ["month_of_year", "quarter_of_year"]}
LATENCY_TARGET_MS = 1.5  # README: one-series Forecaster.predict p50 on a loaded model, calendar channels included


def predict_latency(repeats: int = 300, freqs: tuple[str, ...] = tuple(LATENCY_FREQS), rows: tuple[int, ...] = (200,),
                    n: int = 600) -> dict[str, float]:
    """Single-series ``Forecaster.predict`` p50 through the public API on a loaded model, per frequency (with the
    calendar channels 'auto' gives, and for daily and longer steps also with LATENCY_CALENDARS), and the bare
    forward on the same model input (calendar channels included: F is the model's, not 1) on one thread. predict
    runs with the process's thread count, as a user gets it (it takes one thread for a few windows itself). Wall
    and thread CPU time: on a shared machine the wall time measures the queue for a core."""
    import pandas as pd
    import torch

    import lstmcast

    out = {}
    for freq in freqs:
        for calendar in ("auto", LATENCY_CALENDARS.get(freq)):
            if calendar is not None:
                out.update(_latency_one(freq, calendar, repeats, rows, n, pd, torch, lstmcast))
    return out


def _latency_one(freq, calendar, repeats, rows, n, pd, torch, lstmcast) -> dict[str, float]:
    season = LATENCY_FREQS.get(freq, 24)
    t = np.arange(n)
    df = pd.DataFrame({"time": pd.date_range("1900-01-07" if freq in ("W-SUN", "MS") else "2000-01-02", periods=n,
                                             freq=freq),
                       "y": 10 + np.sin(2 * np.pi * t / season) + 0.1 * np.random.default_rng(0).standard_normal(n)})
    cfg = {"data": {"time_col": "time", "target": "y", "horizon": min(24, season), "calendar": calendar},
           "train": {"max_epochs": 1, "max_steps_per_epoch": 5, "min_steps": 0, "refit": False}}
    threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as tmp:
        lstmcast.Forecaster(cfg).fit(df, progress=False).save(tmp, outputs=False)
        fc = lstmcast.load(tmp)
    torch.set_num_threads(1)  # the bare forward's floor: one window on one thread
    model, L = fc.model_, fc.meta_.window
    x = torch.randn(1, L, model.input_size)  # the model's input: target + calendar channels
    # the horizon's calendar channels enter as known-future inputs (B, H, K)
    future = torch.randn(1, model.horizon, model.future_size) if model.future_size else None
    bare, bare_cpu = [], []
    with torch.inference_mode():
        for _ in range(repeats):
            t0, c0 = time.perf_counter(), time.thread_time()
            model(x, future=future)
            bare_cpu.append(time.thread_time() - c0)
            bare.append(time.perf_counter() - t0)
    torch.set_num_threads(threads)  # fit sets the threads it trains with: predict gets the process's count back
    b, bc = statistics.median(bare) * 1e3, statistics.median(bare_cpu) * 1e3
    names = fc.meta_.inputs.calendar if fc.meta_.inputs else []
    out = {}
    for m in rows:
        recent = df.tail(max(m, L)).reset_index(drop=True)
        fc.predict(recent)
        api, api_cpu = [], []
        for _ in range(repeats):
            t0, c0 = time.perf_counter(), time.thread_time()
            fc.predict(recent)
            api_cpu.append(time.thread_time() - c0)
            api.append(time.perf_counter() - t0)
        a, ac = statistics.median(api) * 1e3, statistics.median(api_cpu) * 1e3
        out[f"{freq}/{'+'.join(names) or 'none'}/{len(recent)}"] = a
        print(f"predict latency {freq} (one series, {len(recent)} rows, L={L}, H={fc.meta_.horizon}, F="
              f"{model.input_size}, calendar {names or 'none'}, {threads} threads): public API p50 {a:.2f} ms "
              f"(target <= {LATENCY_TARGET_MS} ms; CPU {ac:.2f} ms), bare forward p50 {b:.2f} ms (CPU {bc:.2f} ms), "
              f"ratio {a / b:.2f} (CPU {ac / bc:.2f})", flush=True)
    return out


def precision_speed(L=96, B=32, hidden=64, layers=2, H=1, steps=100, rounds=5):
    """``precision: auto`` (its measured probe included in the set-up) against the bare fp32 loop (#7)."""
    import torch

    from lstmcast.config import TrainConfig
    from lstmcast.data.windows import Roles
    from lstmcast.model.network import LSTMForecaster
    from lstmcast.training.accel import resolve
    from lstmcast.training.loop import Trainer, build
    from lstmcast.training.records import TrainData

    data = torch.from_numpy(series())
    bare = bare_loop(data, L, H, B, hidden, layers)
    n = data.shape[0] - L - H + 1
    cfg = TrainConfig(batch_size=B, max_steps_per_epoch=steps, max_epochs=100, patience=20, precision="auto")
    model = LSTMForecaster(data.shape[1], 1, H, hidden, layers, dropout=0.0, window_norm="none")
    t0 = time.perf_counter()
    train_idx, val_idx = torch.arange(n - n // 10), torch.arange(n - n // 10, n)
    settled = build(model, cfg, resolve("cpu", "auto", torch.get_num_threads()),
                    TrainData.of(data, train_idx, val_idx, Roles(L, H, 1))).accel
    probe_s = time.perf_counter() - t0
    # time the steps only, as bare does: no validation windows
    trainer = Trainer(model, cfg, settled, TrainData.of(data, train_idx, torch.arange(0), Roles(L, H, 1)))

    def auto():
        trainer.state.cursor = None  # a fresh epoch of ``steps`` steps each call
        trainer.run_epoch()

    b, a = interleaved(bare, auto, steps, rounds)
    print(f"precision auto -> {trainer.accel.precision} ({trainer.accel.reason}); set-up with probe {probe_s:.1f} s",
          flush=True)
    print(f"precision speed L={L} B={B} hidden {hidden}x{layers}: bare fp32 {b:.1f} steps/s, lstmcast auto "
          f"{a:.1f} steps/s, ratio {a / b:.2f}", flush=True)
    return a / b


def precision_accuracy(seeds=(0,)):
    """Backtest MASE of ``precision: auto`` vs fp32 on the bundled CO2 demo (demo.yaml), per seed (#7)."""
    from lstmcast import Forecaster
    from lstmcast.config import load_config
    from lstmcast.data.io import bundled_path

    for seed in seeds:
        out = {}
        for prec in ("auto", "fp32"):
            cfg = load_config(bundled_path("demo.yaml"), [f"train.precision={prec}", f"train.seed={seed}"])
            t0 = time.perf_counter()
            fc = Forecaster(cfg).fit(str(bundled_path()))
            out[prec] = (fc.training_.accel.precision, time.perf_counter() - t0, fc.backtest()["model"]["MASE"])
        (chosen, t_auto, m_auto), (_, t_fp32, m_fp32) = out["auto"], out["fp32"]
        print(f"precision accuracy seed {seed} (demo CO2): auto -> {chosen}: MASE {m_auto:.4f} in {t_auto:.0f} s; "
              f"fp32: MASE {m_fp32:.4f} in {t_fp32:.0f} s; MASE change {100 * (m_auto / m_fp32 - 1):+.2f}%",
              flush=True)


def main() -> None:
    os.environ.setdefault("LSTMCAST_CACHE_DIR", "off")  # measure precision: auto afresh, never a remembered verdict
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer rounds, no 5M-point memory run")
    ap.add_argument("--smoke", action="store_true",
                    help="a tiny run of every section, to check the script (CI runs every benchmark so)")
    ap.add_argument("--only", choices=["speed", "end-to-end", "allocator", "memory", "latency", "precision"],
                    default=None)
    args = ap.parse_args()
    import torch

    threads = len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    print(f"torch {torch.__version__}, {threads} threads, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}", flush=True)
    if args.smoke:
        smoke(args.only)
        return
    rounds = 3 if args.quick else 7
    if args.only in (None, "latency"):  # first: the heavy sections below leave the process slower to answer
        predict_latency(rows=(200,), n=600) if args.quick else predict_latency(rows=(200, 2000), n=2400)
    if args.only in (None, "speed"):
        speed(96, 32, steps=40 if args.quick else 100, rounds=rounds)
        speed(8, 32, steps=100, rounds=rounds * 3)
    if args.only in (None, "end-to-end"):
        end_to_end(rounds=3 if args.quick else 5)
    if args.only in (None, "allocator"):
        allocator(rounds=2 if args.quick else 4)
    if args.only in (None, "memory"):
        memory(500_000 if args.quick else 5_000_000)
    if args.only in (None, "precision"):
        precision_speed(steps=40 if args.quick else 100, rounds=rounds)
        precision_accuracy()


def smoke(only: str | None) -> None:
    """Every section at a toy size (numbers meaningless): the code paths run, as CI checks."""
    if only in (None, "latency"):
        predict_latency(repeats=5, n=300)
    if only in (None, "speed"):
        speed(24, 32, hidden=16, layers=1, steps=5, rounds=1)
    if only in (None, "end-to-end"):
        end_to_end(L=24, epochs=1, rounds=1, n=800, precisions=("fp32",))
    if only in (None, "allocator"):
        allocator(L=24, n=800, epochs=1, rounds=1)
    if only in (None, "memory"):
        memory(20_000)
    if only in (None, "precision"):
        precision_speed(L=24, hidden=16, layers=1, steps=5, rounds=1)  # the demo fits of accuracy: not in a smoke


if __name__ == "__main__":
    main()
