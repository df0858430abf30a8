"""precision: auto - candidates from the CPU flags, the FLOP estimate, the probe budget, the decision
rule, and the probe itself on a tiny model (weights and RNG untouched, the verdict remembered)."""

from __future__ import annotations

import logging
from dataclasses import replace

import pytest
import torch

from lstmcast.config import TrainConfig
from lstmcast.data.windows import Roles
from lstmcast.model.network import LSTMForecaster
from lstmcast.training import precision as P
from lstmcast.training.accel import PENDING, Accel, cpu_bf16_runs, resolve
from lstmcast.training.loop import Trainer, build
from lstmcast.training.records import TrainData

AVX512_BF16 = "processor : 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni\n"
AMX = "flags : fpu avx512f amx_bf16 amx_tile avx512_bf16\n"
PLAIN = "flags : fpu sse2 avx2 avx512f\n"


def test_cpu_flags_decide_the_candidates():
    assert P.cpu_bf16_flags(AVX512_BF16) == ["avx512_bf16"]
    assert P.cpu_bf16_flags(AMX) == ["amx_bf16", "avx512_bf16"]
    cpu = torch.device("cpu")
    assert P.candidates(cpu, AVX512_BF16) == (["fp32", "bf16"], "this CPU has avx512_bf16")
    cands, why = P.candidates(cpu, PLAIN)
    assert cands == ["fp32"] and "neither AMX-BF16 nor AVX512-BF16" in why
    assert P.cpu_bf16_flags("no flags line here") == []


def test_flop_estimate_matches_the_lstm_arithmetic():
    # one layer, F=1, hidden 2, L=3, B=1, 1 output: 3 * (3 * 2*4*2*(1+2) + 2*2*1)
    assert P.lstm_step_flops(1, 2, 1, 1, 3, 1, 1) == 3 * (3 * 2 * 4 * 2 * 3 + 2 * 2 * 1)
    # the second layer of a bidirectional stack reads 2 * hidden inputs; the head too
    two = P.lstm_step_flops(1, 2, 2, 2, 1, 1, 1)
    assert two == 3 * ((2 * 2 * 4 * 2 * 3) + (2 * 2 * 4 * 2 * 6) + 2 * 4 * 1)
    m = LSTMForecaster(10, 1, 4, hidden_size=64, num_layers=2)
    assert P.model_step_flops(m, 20, 32) == P.lstm_step_flops(10, 64, 2, 1, 20, 32, 4)


def _m(name, fast_ms, loss):
    return P.Measured(name, seconds=[fast_ms / 1e3] * 12 + [1.0] * 4, val_loss=loss)  # a few descheduled steps


def test_decide_takes_bf16_only_when_faster_and_as_accurate():
    plan = P.ProbePlan()
    choice, why = P.decide([_m("fp32", 40, 0.100), _m("bf16", 30, 0.101)], plan)
    assert choice == "bf16"
    assert "bf16 1.33x fp32's speed (faster in 12 of 16 paired blocks; median 30.00 vs 40.00 ms/step)" in why
    choice, why = P.decide([_m("fp32", 40, 0.100), _m("bf16", 30, 0.200)], plan)
    assert choice == "fp32" and "beyond the 5% tolerance" in why
    choice, why = P.decide([_m("fp32", 40, 0.100), _m("bf16", 38, 0.100)], plan)
    assert choice == "fp32" and "(needs 1.10x, faster in 67% of the pairs)" in why
    choice, _ = P.decide([_m("fp32", 40, 0.100), _m("bf16", 10, float("nan"))], plan)
    assert choice == "fp32"


def test_a_speed_up_must_hold_in_most_paired_steps():
    ref = P.Measured("fp32", [1.0] * 6, 0.1)
    erratic = P.Measured("bf16", [0.5, 0.5, 0.5, 2.0, 2.0, 0.9], 0.1)  # median ratio 1.55, wins 4 of 6
    assert P.decide([ref, erratic], P.ProbePlan())[0] == "bf16"
    erratic.seconds[-1] = 2.0  # median ratio 1.25 but faster in only 3 of 6 pairs: load, not speed
    choice, why = P.decide([ref, erratic], P.ProbePlan())
    assert choice == "fp32" and "faster in 3 of 6 paired blocks" in why


def test_decide_picks_the_fastest_acceptable_of_several():
    ms = [_m("fp32", 40, 0.1), _m("tf32", 20, 0.1), _m("bf16", 10, 0.5)]
    assert P.decide(ms, P.ProbePlan())[0] == "tf32"  # bf16 is faster but lost accuracy


def test_typical_cost_ignores_the_odd_descheduled_step():
    assert P.typical_cost([0.01, 0.01, 0.9, 0.012, 0.011, 0.01, 2.5]) == pytest.approx(0.011)
    assert P.typical_cost([]) == float("inf")


def test_short_runs_and_launch_bound_gpu_steps_skip_the_probe():
    plan, m = P.ProbePlan(), LSTMForecaster(1, 1, 4, hidden_size=16, num_layers=1)
    cpu = Accel(torch.device("cpu"), "fp32", 1, PENDING, "auto")
    short = TrainConfig(max_epochs=3, batch_size=32)
    why = P.skip_reason(cpu, m, short, 400, 24, plan, ["fp32", "bf16"], "")
    assert why.startswith("auto: fp32, the run is too short to pay back a precision probe (~36 steps expected")
    long = TrainConfig(max_epochs=100, patience=20, batch_size=32)
    assert P.skip_reason(cpu, m, long, 4000, 24, plan, ["fp32", "bf16"], "") is None
    assert P.skip_reason(cpu, m, long, 4000, 24, plan, ["fp32"], "no bf16 here") == "auto: fp32, no bf16 here"
    gpu = replace(cpu, device=torch.device("cuda"))
    small = P.skip_reason(gpu, m, long, 4000, 24, plan, ["fp32", "tf32", "bf16"], "")
    assert "launch-bound on a GPU" in small


def test_expected_steps_follow_early_stopping_and_step_caps():
    assert P.expected_steps(TrainConfig(max_epochs=60, patience=10, batch_size=32), 1444) == 45 * 30
    assert P.expected_steps(TrainConfig(max_epochs=5, batch_size=32), 1444) == 45 * 5
    assert P.expected_steps(TrainConfig(max_epochs=50, max_steps_per_epoch=4), 1444) == 4 * 30


def test_resolve_leaves_auto_pending_and_forced_precisions_alone(monkeypatch):
    from lstmcast.training import accel as A

    monkeypatch.setattr(A, "cpu_bf16_runs", lambda: True)  # the policy, on any CPU
    a = resolve("cpu", "auto", 1)
    assert a.pending and a.precision == "fp32" and a.requested == "auto"
    forced = resolve("cpu", "bf16", 1)
    assert not forced.pending and forced.autocast_dtype == torch.bfloat16
    cfg = TrainConfig()
    assert P.settle(forced, None, cfg, None, make_trainer=Trainer) is forced  # nothing measured when forced


# -- the probe on a real (tiny) model -----------------------------------------------------------
needs_bf16 = pytest.mark.skipif(not cpu_bf16_runs(), reason="this CPU's oneDNN has no bf16 LSTM kernels")


def test_explicit_bf16_on_a_cpu_without_bf16_kernels_says_so(monkeypatch):
    from lstmcast.errors import ConfigError
    from lstmcast.training import accel as A

    monkeypatch.setattr(A, "cpu_bf16_runs", lambda: False)
    with pytest.raises(ConfigError, match="cannot run an LSTM in bf16.*use fp32"):
        A.resolve("cpu", "bf16", 1)
    monkeypatch.setattr(P, "cpu_bf16_runs", lambda: False)
    assert P.candidates(torch.device("cpu"))[0] == ["fp32"]


def _setup(seed=0):
    torch.manual_seed(seed)
    t = torch.arange(600, dtype=torch.float32)
    series = (torch.sin(t / 4) + 0.1 * torch.randn(600)).unsqueeze(1)  # (N, C=1)
    L, H = 12, 3
    starts = torch.arange(0, 600 - L - H + 1)
    model = LSTMForecaster(1, 1, H, hidden_size=8, num_layers=2, dropout=0.1, window=L)
    cfg = TrainConfig(batch_size=16, max_epochs=100, patience=20, seed=seed)
    return model, cfg, series, starts[:480], starts[480:], L, H


@needs_bf16
def test_probe_measures_every_candidate_and_leaves_model_and_rng_untouched(monkeypatch, caplog):
    monkeypatch.setattr(P, "candidates", lambda dev: (["fp32", "bf16"], "test CPU with bf16"))
    monkeypatch.setattr(P, "_DECIDED", {})
    model, cfg, series, tr, va, L, H = _setup()
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    plan = P.ProbePlan(rounds=2, steps_per_round=1, warmup=1)
    with caplog.at_level(logging.INFO, logger="lstmcast.training.precision"):
        settled = P.settle(resolve("cpu", "auto", 1), model, cfg, TrainData.of(series, tr, va, Roles(L, H, 1)),
                           make_trainer=Trainer, plan=plan)
    assert settled.precision in ("fp32", "bf16") and not settled.pending
    assert settled.reason.startswith(f"auto: {settled.precision}, measured over 2 interleaved blocks of 1 steps each")
    assert "validation loss" in settled.reason and "test CPU with bf16" in settled.reason
    assert f"precision {settled.precision} (auto:" in caplog.text
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in weights.items())
    assert torch.equal(torch.get_rng_state(), rng)  # the real run draws the same dropout masks
    calls = []
    monkeypatch.setattr(P, "run_probe", lambda *a, **k: calls.append(1))
    again = P.settle(resolve("cpu", "auto", 1), model, cfg, TrainData.of(series, tr, va, Roles(L, H, 1)),
                     make_trainer=Trainer, plan=plan)
    assert calls == [] and again.precision == settled.precision
    assert "measured earlier on this machine" in again.reason


@needs_bf16
def test_the_trainer_trains_in_the_probed_precision(monkeypatch):
    model, cfg, series, tr, va, L, H = _setup(1)
    fake = [P.Measured("fp32", [0.04] * 4, 0.30), P.Measured("bf16", [0.02] * 4, 0.30)]
    monkeypatch.setattr(P, "candidates", lambda dev: (["fp32", "bf16"], "test CPU"))
    monkeypatch.setattr(P, "run_probe", lambda *a, **k: fake)
    monkeypatch.setattr(P, "_DECIDED", {})
    trainer = build(model, cfg, resolve("cpu", "auto", 1), TrainData.of(series, tr, va, Roles(L, H, 1)))
    assert trainer.accel.precision == "bf16" and trainer.accel.autocast_dtype == torch.bfloat16
    assert "bf16 2.00x fp32's speed" in trainer.accel.reason
    seen = []
    model.register_forward_hook(lambda mod, inp, out: seen.append(torch.is_autocast_enabled("cpu")))
    trainer.train_step(tr[:16])
    assert seen == [True]


def test_a_short_run_keeps_fp32_without_probing(monkeypatch):
    monkeypatch.setattr(P, "candidates", lambda dev: (["fp32", "bf16"], "test CPU"))
    monkeypatch.setattr(P, "run_probe", lambda *a, **k: pytest.fail("a short run must not be probed"))
    model, _, series, tr, va, L, H = _setup()
    cfg = TrainConfig(batch_size=16, max_epochs=2)
    trainer = build(model, cfg, resolve("cpu", "auto", 1), TrainData.of(series, tr, va, Roles(L, H, 1)))
    assert trainer.accel.precision == "fp32" and "too short to pay back" in trainer.accel.reason


def test_auto_is_the_default_precision():
    assert TrainConfig().precision == "auto"


@needs_bf16
def test_probe_times_each_candidate_in_blocks_of_steps(monkeypatch):
    # training runs one precision for many steps in a row; alternating single steps between two models
    # hid most of bf16's gain on this project's CPU, so each round times a block per candidate
    monkeypatch.setattr(P, "candidates", lambda dev: (["fp32", "bf16"], "test CPU with bf16"))
    model, cfg, series, tr, va, L, H = _setup()
    blocks = []
    real = P._timed
    monkeypatch.setattr(P, "_timed", lambda dev, prec, step, batches: blocks.append((prec, len(batches)))
                        or real(dev, prec, step, batches))
    plan = P.ProbePlan(rounds=3, steps_per_round=4, warmup=1)
    measured = P.run_probe(["fp32", "bf16"], resolve("cpu", "auto", 1), model, cfg,
                           TrainData.of(series, tr, va, Roles(L, H, 1)), plan, Trainer)
    timed = blocks[2:]  # after one warm-up call per candidate
    assert timed == [("fp32", 4), ("bf16", 4), ("bf16", 4), ("fp32", 4), ("fp32", 4), ("bf16", 4)]  # ABBA
    assert [len(m.seconds) for m in measured] == [3, 3]


def test_a_verdict_is_remembered_per_machine_so_the_same_config_trains_the_same_way(monkeypatch, tmp_path):
    from lstmcast.training import decision_cache

    monkeypatch.setenv("LSTMCAST_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(P, "candidates", lambda dev: (["fp32", "bf16"], "test CPU with bf16"))
    monkeypatch.setattr(P, "_DECIDED", {})
    probes = []
    monkeypatch.setattr(P, "run_probe", lambda *a, **k: probes.append(1) or [
        P.Measured("fp32", seconds=[2.0] * 6, val_loss=0.1), P.Measured("bf16", seconds=[1.0] * 6, val_loss=0.1)])
    model, cfg, series, tr, va, L, H = _setup()
    plan = P.ProbePlan(rounds=2, steps_per_round=1, warmup=1)
    first = P.settle(resolve("cpu", "auto", 1), model, cfg, TrainData.of(series, tr, va, Roles(L, H, 1)),
                     make_trainer=Trainer, plan=plan)
    assert first.precision == "bf16" and len(probes) == 1
    assert (tmp_path / decision_cache.FILE).is_file()
    monkeypatch.setattr(P, "_DECIDED", {})  # a new process: only the file remembers
    second = P.settle(resolve("cpu", "auto", 1), model, cfg, TrainData.of(series, tr, va, Roles(L, H, 1)),
                      make_trainer=Trainer, plan=plan)
    assert second.precision == "bf16" and len(probes) == 1
    assert "measured earlier on this machine" in second.reason
    (tmp_path / decision_cache.FILE).write_text("{not json")  # a damaged cache is ignored, never fatal
    monkeypatch.setattr(P, "_DECIDED", {})
    third = P.settle(resolve("cpu", "auto", 1), model, cfg, TrainData.of(series, tr, va, Roles(L, H, 1)),
                     make_trainer=Trainer, plan=plan)
    assert third.precision == "bf16" and len(probes) == 2
    monkeypatch.setenv("LSTMCAST_CACHE_DIR", "off")
    assert decision_cache.folder() is None
