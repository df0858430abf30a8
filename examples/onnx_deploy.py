"""Deploy without PyTorch: export a trained run to ONNX, then forecast with onnxruntime and export.json alone
(needs `pip install 'lstmcast[export]'`).

    python examples/onnx_deploy.py
"""

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pandas as pd

import lstmcast
from lstmcast.export import export_run

DATA = Path(__file__).resolve().parent / "data"
sales = pd.read_csv(DATA / "stores_daily.csv")
s1 = sales[sales["store"] == "s1"][["date", "sales"]]  # one series, daily: no calendar inputs to build
fc = lstmcast.Forecaster({"data": {"time_col": "date", "target": "sales", "horizon": 14},
                          "train": {"max_epochs": 5}}).fit(s1)
run = Path(fc.save("runs/example-onnx"))
res = export_run(run)  # model.onnx + export.json, checked against PyTorch first
print(f"exported {res.onnx_path} (max |onnx - torch| {res.max_abs_diff:.2g})")

# --- what the deployment does: no lstmcast, no torch ---
spec = json.loads((run / "export.json").read_text())
session = ort.InferenceSession(str(run / "model.onnx"), providers=["CPUExecutionProvider"])
mean, std = np.asarray(spec["scaler"]["mean"][0]), np.asarray(spec["scaler"]["std"][0])
raw = s1[spec["channels"]].to_numpy(np.float64)[-spec["window"]:]  # the last L rows, in channel order
x = ((raw - mean) / std).astype(np.float32)[None]  # (1, L, F), scaled
y = session.run(None, {"x": x})[0][0] * std[:spec["n_targets"]] + mean[:spec["n_targets"]]  # (H, T)
print("onnxruntime:", np.round(y[:5, 0], 2))
print("lstmcast:   ", np.round(fc.predict()["sales"].to_numpy()[:5], 2))
