"""A long table: daily sales of four stores (one row per store and day), one global model, a static region.
Then a store the model never saw is forecast from its own recent rows.

    python examples/long_table.py
"""

from pathlib import Path

import pandas as pd

import lstmcast

DATA = Path(__file__).resolve().parent / "data"
sales = pd.read_csv(DATA / "stores_daily.csv")
config = {
    "data": {"time_col": "date", "id_col": "store", "target": "sales", "static_features": ["region"],
             "horizon": 14},
    "train": {"max_epochs": 5},
}
fc = lstmcast.Forecaster(config).fit(sales)
metrics = fc.backtest()
print({store: round(m["model"]["MASE"], 3) for store, m in metrics["per_series"].items()})  # MASE per store

new_store = pd.read_csv(DATA / "new_store.csv")  # store s5: 10 weeks of history, never trained on
print(fc.predict(new_store).head(14))
