"""`lstmcast tune`: the Optuna study (study.py), its search space (space.py), storage and worker slots
(storage.py) and the results it writes (results.py)."""
