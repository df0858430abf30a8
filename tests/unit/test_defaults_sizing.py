"""Defaults that apply the guide (issue: forecast quality with defaults): step budget, auto sizing, the
linear skip's fit, refit on every row, the honest headline."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

import lstmcast
from lstmcast.config import ModelConfig, TrainConfig, validate_config
from lstmcast.data.windows import Roles
from lstmcast.doctor.headline import baseline_finding, with_headline
from lstmcast.errors import ConfigError
from lstmcast.model.build import build_model
from lstmcast.model.sizing import auto_hidden, model_parameters, resolve_model
from lstmcast.training import skip_init
from lstmcast.training.accel import resolve
from lstmcast.training.loop import Trainer
from lstmcast.training.records import TrainData
from lstmcast.training.skip_init import SkipFit, fit_skip, priors
from tests.conftest import seasonal_frame


@pytest.mark.parametrize("m", [ModelConfig(), ModelConfig(num_layers=3, bidirectional=True),
                               ModelConfig(residual=True, linear_skip=False), ModelConfig(bias=False),
                               ModelConfig(levels=[80, 95]), ModelConfig(levels=[50], bidirectional=True)])
def test_parameter_formula_equals_the_built_model(m):
    for hidden in (8, 32):
        model = build_model(m.model_copy(update={"hidden_size": hidden, "dropout": 0.0}), 3, 2, 7, 20)
        assert model_parameters(m, hidden, F=3, T=2, H=7, L=20) == sum(p.numel() for p in model.parameters())


def test_auto_hidden_gives_a_smaller_model_for_fewer_windows():
    m = ModelConfig()
    sizes = [auto_hidden(m, w, F=1, T=1, H=12, L=24) for w in (10, 45, 200, 1_000, 100_000)]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1] == 64
    assert sizes[1] == 16  # a 144-point monthly series: 45 training windows


def test_auto_dropout_follows_the_layers_and_explicit_dropout_with_one_layer_stays_an_error():
    one = validate_config({"model": {"num_layers": 1}})  # valid: dropout auto
    assert resolve_model(one.model, 100, 1, 1, 4, 8).dropout == 0.0
    assert resolve_model(ModelConfig(), 100, 1, 1, 4, 8).dropout == 0.1
    with pytest.raises(ConfigError, match="model.dropout=0.2 has no effect with model.num_layers=1"):
        validate_config({"model": {"num_layers": 1, "dropout": 0.2}})
    with pytest.raises(ConfigError, match=r"model.hidden_size: .*\(or 'auto'\)"):
        validate_config({"model": {"hidden_size": 0}})


def _trainer(n_windows: int, cfg: TrainConfig, L: int = 8, H: int = 2) -> Trainer:
    series = torch.randn(n_windows + L + H - 1 + 20, 1)
    starts = torch.arange(n_windows + 20)
    model = build_model(ModelConfig(hidden_size=8, num_layers=1, dropout=0.0), 1, 1, H, L)
    return Trainer(model, cfg, resolve("cpu", "fp32", 1),
                   TrainData.of(series, starts[:n_windows], starts[n_windows:], Roles(L, H, 1)))


def test_a_tiny_series_gets_at_least_the_minimum_steps():
    # 40 training windows at batch 32: one step per pass; patience 2 would stop after 3 epochs = 3 steps
    t = _trainer(40, TrainConfig(batch_size=32, patience=2, min_steps=120, min_epoch_steps=20, seed=0,
                                 precision="fp32", max_epochs=1000))
    assert t.steps_per_epoch() == 20
    res = t.fit()
    assert res.steps >= 120
    assert all(r.steps == 20 for r in res.history)


def test_an_epoch_redraws_the_windows_evenly():
    t = _trainer(40, TrainConfig(batch_size=8, min_epoch_steps=20, seed=0, precision="fp32"))
    order = t._epoch_order(t.steps_per_epoch())
    counts = torch.bincount(order, minlength=40)
    assert len(order) == 160 and counts.min() == counts.max() == 4  # 4 whole permutations


def test_step_zero_is_kept_when_training_never_beats_it():
    t = _trainer(64, TrainConfig(batch_size=16, lr=1.0, clip_norm=None, max_epochs=3, min_steps=0, seed=0,
                                 precision="fp32"))
    before = {k: v.clone() for k, v in t.model.state_dict().items()}
    t._validate_start()
    t.state.best_val_loss = -1.0  # nothing can beat it
    t.fit()
    assert t.state.best_epoch == 0
    assert all(torch.equal(before[k], v) for k, v in t.model.state_dict().items())


def _windows(y: np.ndarray, L: int, H: int):
    series = torch.tensor(y, dtype=torch.float32)[:, None]
    return series.unfold(0, L + H, 1)


def test_skip_fit_recovers_a_linear_process_and_prefers_the_seasonal_prior_on_a_seasonal_series():
    rng = np.random.default_rng(0)
    y = np.zeros(600)
    for t in range(2, 600):  # AR(2): the ridge fit must beat both baselines on it
        y[t] = 1.5 * y[t - 1] - 0.7 * y[t - 2] + 0.1 * rng.standard_normal()
    w = _windows(y, 10, 3)
    fit = fit_skip(w, torch.arange(400), torch.arange(400, len(w)), 10, 3, 1, None)
    assert fit.lam != float("inf") and np.isfinite(fit.val_loss)
    naive_loss = float(((w[400:, 0, 10:] - w[400:, 0, 9:10]) ** 2).mean())
    assert fit.val_loss < 0.7 * naive_loss  # near the AR(2)'s own 3-step error (~0.033)
    s = np.tile([0.0, 5.0, -3.0, 1.0], 100) + 0.01 * rng.standard_normal(400)
    w = _windows(s, 8, 4)
    fit = fit_skip(w, torch.arange(300), torch.arange(300, len(w)), 8, 4, 1, 4)
    snaive = float(((w[300:, 0, 8:] - w[300:, 0, 4:8]) ** 2).mean())
    naive = float(((w[300:, 0, 8:] - w[300:, 0, 7:8]) ** 2).mean())
    assert fit.val_loss <= snaive < 0.01 * naive  # never worse on validation than the better baseline


def test_seasonal_prior_is_the_seasonal_naive_forecast():
    p = priors(window=6, horizon=5, season=3)["seasonal naive"]
    x = torch.arange(6.0)  # ... 3, 4, 5: the last season
    last = x[-1]
    assert torch.equal(last + p @ (x - last), torch.tensor([3.0, 4.0, 5.0, 3.0, 4.0]))


def test_refit_trains_the_final_model_on_every_row_and_backtests_the_first(tmp_path):
    df = seasonal_frame(300, period=12, noise=0.2)
    cfg = {"data": {"time_col": "time", "target": "y", "horizon": 6, "window": 24, "season": 12},
           "model": {"hidden_size": 8}, "train": {"max_epochs": 3, "seed": 0},
           "monitor": {"tensorboard": False}}
    fc = lstmcast.Forecaster(cfg).fit(df)
    assert fc.meta_.refit["windows"] == 300 - 24 - 6 + 1  # every complete window, the test split's too
    assert fc.meta_.refit["rows"] == 300
    assert fc.model_ is not fc.backtest_model_
    first = fc.backtest()["model"]["MASE"]
    fc.save(tmp_path / "run")
    again = lstmcast.load(tmp_path / "run")
    assert again.backtest(df)["model"]["MASE"] == pytest.approx(first, rel=1e-5)  # the first model, reloaded
    p1, p2 = fc.predict(df), again.predict(df)
    assert np.allclose(p1["y"], p2["y"], atol=1e-5)
    off = lstmcast.Forecaster({**cfg, "train": {**cfg["train"], "refit": False}}).fit(df)
    assert off.meta_.refit is None and off.model_ is off.backtest_model_


def test_headline_leads_the_diagnosis_when_the_model_loses():
    from lstmcast.doctor.diagnosis import diagnose

    h = [{"epoch": e, "train_loss": 1 / e, "val_loss": 1 / e, "skipped_steps": 0} for e in range(1, 6)]
    metrics = {"model": {"MASE": 1.4}, "naive": {"MASE": 1.2}, "seasonal_naive": {"MASE": 1.0}}
    d = with_headline(diagnose(h), metrics)
    assert d.verdict == "loses-to-baseline"
    assert d.summary.startswith("the model loses to seasonal naive on the backtest: MASE 1.4 against 1 (40% worse)")
    assert d.findings[0].code == "loses-to-baseline" and "more history" in d.findings[0].fix
    assert with_headline(diagnose(h), {**metrics, "model": {"MASE": 0.9}}).verdict != "loses-to-baseline"
    assert baseline_finding({"model": {"MASE": float("nan")}, "naive": {"MASE": 1.0}}) is None


def test_cli_summary_says_the_loss_to_a_baseline_before_the_table(capsys, tmp_path):
    from types import SimpleNamespace

    from lstmcast.cli_output import print_trained as _print_trained
    from lstmcast.doctor.diagnosis import diagnose

    metrics = {"model": {"MAE": 2.0, "RMSE": 2.5, "sMAPE": 9.0, "MASE": 1.3},
               "naive": {"MAE": 1.8, "RMSE": 2.2, "sMAPE": 8.0, "MASE": 1.1},
               "seasonal_naive": {"MAE": 1.9, "RMSE": 2.4, "sMAPE": 8.5, "MASE": 1.2}}
    h = [{"epoch": e, "train_loss": 1 / e, "val_loss": 1 / e, "skipped_steps": 0} for e in range(1, 6)]
    fc = SimpleNamespace(training_=SimpleNamespace(result=SimpleNamespace(best_epoch=3, stop_reason="early stopping")),
                         meta_=SimpleNamespace(n_parameters=100, horizon=4,
                                               refit={"rows": 50, "steps": 120, "windows": 40}, future_features=[],
                                               local=None),
                         history_=h, backtest_=SimpleNamespace(origins=[1, 2]),
                         diagnosis_=with_headline(diagnose(h), metrics),
                         config_=validate_config({"monitor": {"tensorboard": False}}))
    _print_trained(fc, metrics, tmp_path)
    out = capsys.readouterr().out
    warning = out.index("WARNING: the model loses to naive on the backtest: MASE 1.3 against 1.1")
    assert warning < out.index("backtest on the test split")  # said first, before the numbers
    assert "refitted on all 50 rows for 120 steps" in out


def test_report_says_which_model_produced_which_number():
    from lstmcast.report.html import summary_section

    metrics = {"model": {"MASE": 1.3}, "naive": {"MASE": 1.1}, "seasonal_naive": {"MASE": 1.2}}
    diag = {"summary": "the model loses to naive on the backtest: MASE 1.3 against 1.1 (18% worse); learning "
                       "curves: converged"}
    meta = {"horizon": 4, "targets": ["y"], "window": 8, "refit": {"rows": 50, "steps": 120, "windows": 40}}
    html = summary_section(meta, metrics, diag)
    assert html.index("the model loses to naive") < html.index("Backtest MASE")  # the headline first
    assert "refitted on all 50 rows for 120 steps" in html and "never saw the test split" in html
    assert "refitted" not in summary_section({**meta, "refit": None}, metrics, diag)


def test_refit_skips_windows_with_missing_values_like_training():
    df = seasonal_frame(300, period=12, noise=0.2)
    df.loc[150:152, "y"] = np.nan  # kept as NaN by missing: drop-windows
    cfg = {"data": {"time_col": "time", "target": "y", "horizon": 6, "window": 24, "season": 12,
                    "missing": "drop-windows"},
           "model": {"hidden_size": 8}, "train": {"max_epochs": 2, "seed": 0, "min_steps": 0},
           "monitor": {"tensorboard": False}}
    fc = lstmcast.Forecaster(cfg).fit(df)
    assert fc.meta_.refit["windows"] == 300 - 24 - 6 + 1 - (3 + 24 + 6 - 1)  # every window touching a NaN dropped
    assert all(torch.isfinite(p).all() for p in fc.model_.parameters())


def test_auto_hidden_counts_the_decoder_and_embeddings_of_covariate_models():
    from lstmcast.config import ModelConfig
    from lstmcast.model.build import build_model
    from lstmcast.model.sizing import model_parameters, resolve_model

    m = ModelConfig(hidden_size=16, num_layers=1)
    sizes = {"future_size": 3, "static_size": 2, "static_cardinalities": (4, 9)}
    built = build_model(m.model_copy(update={"dropout": 0.0}), 5, 1, 6, 24, **sizes)
    assert model_parameters(m, 16, 5, 1, 6, 24, **sizes) == sum(p.numel() for p in built.parameters())
    # 600 windows carry the plain 64-unit model (52k parameters) but not one with a 40-input decoder and a
    # 500-id embedding (73k): the extra parameters count, so auto picks 32
    plain = resolve_model(ModelConfig(), 600, 5, 1, 6, 24).hidden_size
    with_inputs = resolve_model(ModelConfig(), 600, 5, 1, 6, 24, future_size=40, static_size=2,
                                static_cardinalities=(500,)).hidden_size
    assert (plain, with_inputs) == (64, 32)


def test_robust_skip_fit_minimises_the_absolute_error_and_is_chosen_on_it():
    rng = np.random.default_rng(0)
    dy = np.zeros(600)
    for t in range(1, 600):  # ARIMA(1, 1, 0) with heavy-tailed shocks: the next change is 0.6 of the last one
        dy[t] = 0.6 * dy[t - 1] + 0.1 * rng.standard_t(1.5)
    w = _windows(np.cumsum(dy), 6, 2)
    train, val = torch.arange(450), torch.arange(450, len(w))
    z, d = skip_init._deltas(w, train, 6, 1)
    p = torch.zeros(2, 6, dtype=torch.float64)
    gram = z.T @ z
    ridge = torch.linalg.solve(gram + 1e-3 * float(torch.diagonal(gram).mean()) * torch.eye(6, dtype=torch.float64),
                               z.T @ d).T
    absolute = skip_init._absolute_fit(z, d, p, ridge, 1e-3, None)
    assert float((z @ absolute.T - d).abs().mean()) < float((z @ ridge.T - d).abs().mean())
    assert float(((z @ absolute.T - d) ** 2).mean()) > float(((z @ ridge.T - d) ** 2).mean())
    robust = fit_skip(w, train, val, 6, 2, 1, None, robust=True)
    assert robust.robust and not fit_skip(w, train, val, 6, 2, 1, None).robust
    x, target = w[450:, 0, :6].double(), w[450:, 0, 6:].double()
    mae = float((x[:, -1:] + (x - x[:, -1:]) @ robust.weight.double().T - target).abs().mean())
    assert robust.val_loss == pytest.approx(mae, rel=1e-4)  # chosen on the absolute error
    # the choice carries the fit: a refit (train.refit, calibration, resume) fits the same way
    again = fit_skip(w, train, val[:0], 6, 2, 1, None, choice=SkipFit.from_dict(robust.as_dict()))
    assert again.robust and torch.allclose(again.weight, robust.weight, atol=1e-5)
    assert not SkipFit.from_dict({"prior": "naive", "lam": 0.1}).robust  # a checkpoint from before: least squares


def test_a_table_fits_the_robust_skip_and_one_series_keeps_least_squares(caplog):
    from tests.unit.test_panels import panel

    cfg = {"data": {"time_col": "date", "target": "y", "id_col": "id", "horizon": 6, "season": 12},
           "model": {"hidden_size": 8}, "train": {"max_epochs": 1, "min_steps": 0, "seed": 0},
           "monitor": {"tensorboard": False}}
    for table, robust in ((panel([60, 70, 80]), True), (panel([80]).drop(columns="id"), False)):
        caplog.clear()
        one = {**cfg, "data": {k: v for k, v in cfg["data"].items() if robust or k != "id_col"}}
        with caplog.at_level(logging.INFO, logger="lstmcast.training.skip_init"):
            lstmcast.Forecaster(one).fit(table)
        chose = [r.getMessage() for r in caplog.records if r.getMessage().startswith("linear skip")]
        assert chose and all(("absolute" in m) == robust for m in chose), chose


def test_the_absolute_fit_reweights_a_share_of_whole_windows_above_its_budget(monkeypatch):
    z = torch.arange(40.0, dtype=torch.float64).repeat_interleave(6).reshape(40, 6)  # 20 windows x 2 targets
    d = z[:, :2].clone()
    monkeypatch.setattr(skip_init, "ROBUST_BUDGET", 6 * 6 * 2 * 10)  # 10 rows a reweighting: 5 windows
    zr, dr = skip_init._robust_rows(z, d, torch.Generator().manual_seed(0), n_targets=2)
    assert zr.shape == (10, 6) and dr.shape == (10, 2)
    assert torch.equal(zr[0::2, 0] % 2, torch.zeros(5, dtype=torch.float64))  # each window's two targets together
    assert torch.equal(zr[1::2, 0] - zr[0::2, 0], torch.ones(5, dtype=torch.float64))
    rng = np.random.default_rng(0)
    w = _windows(np.cumsum(rng.standard_normal(300)), 6, 2)
    fit = fit_skip(w, torch.arange(200), torch.arange(200, len(w)), 6, 2, 1, None, robust=True)
    assert fit.robust and torch.isfinite(fit.weight).all()


def test_a_table_trains_on_the_absolute_error_and_one_series_keeps_the_squared_error(monkeypatch):
    from lstmcast.model import losses
    from tests.unit.test_panels import panel

    used: list[str] = []

    def recorded(name: str, fn):
        def loss(a, b):
            used.append(name)
            return fn(a, b)
        return loss

    monkeypatch.setattr(losses, "LOSSES", {k: recorded(k, f) for k, f in losses.LOSSES.items()})
    cfg = {"data": {"time_col": "date", "target": "y", "id_col": "id", "horizon": 6, "season": 12},
           "model": {"hidden_size": 8}, "train": {"max_epochs": 1, "min_steps": 0, "seed": 0},
           "monitor": {"tensorboard": False}}
    one = {**cfg, "data": {k: v for k, v in cfg["data"].items() if k != "id_col"}}
    table = {**cfg, "train": {**cfg["train"], "loss": "mse"}}  # said explicitly: kept
    for conf, frame, loss in ((cfg, panel([60, 70, 80]), "mae"), (one, panel([80]).drop(columns="id"), "mse"),
                              (table, panel([60, 70, 80]), "mse")):
        used.clear()
        fc = lstmcast.Forecaster(conf).fit(frame)
        assert fc.config_.train.loss == loss  # the run records the loss it trained with, not auto
        assert used and set(used) == {loss}, set(used)  # training and validation both
    assert validate_config({}).train.loss == "auto"


def test_a_table_trained_on_the_resolved_loss_resumes_with_loss_auto(tmp_path):
    import shutil

    from lstmcast.training.checkpoint import CheckpointStore, read_checkpoint
    from tests.unit.test_panels import panel

    cfg = {"data": {"time_col": "date", "target": "y", "id_col": "id", "horizon": 6, "season": 12},
           "model": {"hidden_size": 8}, "train": {"max_epochs": 3, "min_steps": 0, "seed": 0, "precision": "fp32",
                                                  "checkpoint_seconds": 0}, "monitor": {"tensorboard": False}}
    full = lstmcast.Forecaster(cfg).fit(panel([60, 70, 80]), run_dir=tmp_path / "a")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    first = read_checkpoint(CheckpointStore(tmp_path / "b").names()[-1])  # the earliest kept: before the end
    assert first.epoch < len(full.history_)
    resumed = lstmcast.Forecaster(cfg).fit(panel([60, 70, 80]), run_dir=tmp_path / "b", resume_from=first)
    assert resumed.config_.train.loss == "mae"
    assert [r["train_loss"] for r in resumed.history_] == [r["train_loss"] for r in full.history_]


def test_the_skip_scores_its_candidates_in_chunks_of_whole_windows_with_the_same_result(monkeypatch):
    gen = torch.Generator().manual_seed(0)
    z, d, w = (torch.randn(2 * 37, 6, generator=gen, dtype=torch.float64),
               torch.randn(2 * 37, 3, generator=gen, dtype=torch.float64), torch.randn(3, 6, generator=gen,
                                                                                      dtype=torch.float64))
    whole = {k: skip_init._chunk_losses(z, d, w, k, 2) for k in ("mse", "mae", "huber")}
    monkeypatch.setattr(skip_init, "LOSS_ROWS", 9)  # 4 windows of 2 targets a chunk, the last one shorter
    for kind, expected in whole.items():
        got = skip_init._losses(z, d, w, kind, 2)
        assert got.shape == (37,) and torch.allclose(got, expected, rtol=0, atol=1e-12), kind
    assert skip_init._losses(z[:0], d[:0], w, "mae", 2).shape == (0,)


def test_the_skip_gathers_only_the_targets_of_a_window_with_other_channels():
    series = torch.arange(60.0).reshape(20, 3)  # 20 steps, 3 channels: 2 targets and 1 input
    windows = series.unfold(0, 6, 1)  # (15, 3, 6)
    idx = torch.tensor([0, 4, 9])
    z, d = skip_init._deltas(windows, idx, 4, 2)
    full = windows[idx][:, :2].double()
    assert torch.equal(z, (full[:, :, :4] - full[:, :, 3:4]).reshape(-1, 4))
    assert torch.equal(d, (full[:, :, 4:] - full[:, :, 3:4]).reshape(-1, 2))
