"""The training monitor: TensorBoard content, probe schedule and budget, findings, no effect on training."""

from __future__ import annotations

import json
import math

import pytest
import torch

from lstmcast import Forecaster
from lstmcast.config import validate_config
from lstmcast.training.monitor import Monitor, monitor_findings
from tests.conftest import seasonal_frame, small_config


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)  # tiny models: extra OpenMP threads only spin (conftest restores the count)


def _fit(monitor: Monitor | None, epochs: int = 3, **model):
    cfg = small_config(train={"max_epochs": epochs, "patience": 100, "threads": 1},
                       model={"num_layers": 2, "hidden_size": 8, **model})
    return Forecaster(cfg).fit(seasonal_frame(n=400), callbacks=[monitor] if monitor else None)


def _events(tb_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0, "histograms": 0, "tensors": 0})
    acc.Reload()
    return acc


def test_tensorboard_gets_scalars_histograms_gates_and_text(tmp_path):
    cfg = validate_config(small_config(model={"num_layers": 2, "hidden_size": 8}))
    mon = Monitor(tmp_path, cfg, max_overhead=None)
    fc = _fit(mon, epochs=3)
    mon.close()
    acc = _events(tmp_path / "tb")
    tags = acc.Tags()
    for tag in ("loss/train", "loss/val", "optim/lr", "optim/grad_norm", "optim/clipped_fraction",
                "optim/skipped_steps", "speed/samples_per_s", "gates/layer2/forget_saturated",
                "gates/layer1/cell_mean", "units/layer2/dead_fraction", "probe/recompute_error"):
        assert tag in tags["scalars"], tag
    losses = [e.value for e in acc.Scalars("loss/train")]
    assert losses == pytest.approx([h["train_loss"] for h in fc.history_], rel=1e-6)
    assert [e.step for e in acc.Scalars("loss/val")] == [1, 2, 3]
    assert max(e.value for e in acc.Scalars("probe/recompute_error")) < 1e-5
    for tag in ("layer1/h_n", "layer2/c_n", "weights/lstm.weight_hh_l1", "grads/lstm.weight_ih_l0",
                "weights/head.bias"):
        assert tag in tags["histograms"], tag
    hist = acc.Histograms("layer1/h_n")[-1].histogram_value
    assert hist.num == min(32, len(fc.prepared_.index.val)) * 8  # (D=1, B=probe windows, hidden=8)
    assert sum(hist.bucket) == hist.num
    assert "config/text_summary" in tags["tensors"]
    text = acc.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "hidden_size: 8" in text


def test_probes_follow_every_and_the_budget():
    every2 = Monitor(None, tensorboard=False, every=2, max_overhead=None)
    _fit(every2, epochs=5)
    assert [p["epoch"] for p in every2.probes] == [1, 2, 4, 5]  # 1 and the last always
    tight = Monitor(None, tensorboard=False, max_overhead=1e-12)
    _fit(tight, epochs=4)
    assert [p["epoch"] for p in tight.probes] == [1, 4]
    assert tight.postponed == 2
    summary = tight.summary()
    assert summary["overhead"]["postponed_probes"] == 2
    # the first and last probes always run, so a 1e-12 budget is exceeded: the summary must say so (H17)
    assert summary["overhead"]["within_budget"] is False and summary["overhead"]["max_overhead"] == 1e-12
    assert every2.summary()["overhead"]["within_budget"] is None  # no budget, no claim
    json.dumps(summary)  # monitor.json must be plain JSON
    layer = summary["probes"][-1]["layers"][0]
    assert set(layer["gate_mean"]) == {"input", "forget", "cell", "output"}
    assert 0 <= layer["dead_units"] <= layer["units"] == 8


def test_the_monitor_does_not_change_the_training():
    plain = _fit(None, epochs=3, bidirectional=True)
    watched = _fit(Monitor(None, tensorboard=False, max_overhead=None), epochs=3, bidirectional=True)
    assert [h["train_loss"] for h in watched.history_] == [h["train_loss"] for h in plain.history_]
    assert [h["val_loss"] for h in watched.history_] == [h["val_loss"] for h in plain.history_]


def _probe(epoch: int, forget_sat: float = 0.1, dead: int = 0, units: int = 32) -> dict:
    """Layer 1 healthy; layer 2 with ``forget_sat`` saturated forget gates and ``dead`` dead units."""
    gates = {"input": 0.1, "forget": 0.1, "cell": 0.0, "output": 0.1}
    healthy = {"gate_mean": gates, "gate_saturated": gates, "dead_units": 0, "units": units}
    sick = dict(healthy, gate_saturated={**gates, "forget": forget_sat}, dead_units=dead)
    return {"epoch": epoch, "layers": [healthy, sick]}


def _history(norms: list[float]) -> list[dict]:
    return [{"epoch": i + 1, "grad_norm": n} for i, n in enumerate(norms)]


def test_findings_name_saturated_forget_gates_dead_units_and_gradient_spikes():
    probes = [_probe(1), _probe(7, forget_sat=0.62, dead=12)]
    found = {f.code: f for f in monitor_findings(probes, _history([1.0, 1.2, 0.9, 1.1, 30.0]), clip_norm=None)}
    assert set(found) == {"forget-gate-saturated", "dead-units", "exploding-gradients"}
    sat = found["forget-gate-saturated"]
    assert sat.message.startswith("62% of layer-2 forget gates saturated") and "epoch 7" in sat.message
    assert "lower train.lr" in sat.fix and "set train.clip_norm: 1.0" in sat.fix
    assert found["dead-units"].message.startswith("12 of 32 hidden units of layer 2 are dead")
    assert "model.hidden_size towards 20" in found["dead-units"].fix
    grad = found["exploding-gradients"]
    assert "jumped to 30 at epoch 5" in grad.message and "29x the median 1.05 of the epochs before" in grad.message
    assert all(f.severity == "warning" for f in found.values())


def test_no_findings_for_a_healthy_run_and_clipping_advice_when_on():
    assert monitor_findings([_probe(3)], _history([1.0, 0.8, 0.7, 0.6, 0.5])) == []
    assert monitor_findings([], _history([1.0, math.nan, 2.0])) == []
    f = monitor_findings([_probe(2, forget_sat=0.9)], [], clip_norm=1.0)
    assert [x.code for x in f] == ["forget-gate-saturated"]
    assert "keep train.clip_norm on (now 1" in f[0].fix and f[0].message.startswith("90% of layer-2")
