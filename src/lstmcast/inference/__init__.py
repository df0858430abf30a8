"""Using a fitted model: forecasts (predict.py), rolling-origin backtests (backtest.py), the low-latency
single-series path (fastpath.py) and interval calibration."""
