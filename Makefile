# Two entry points, both self-contained on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo lint test test-slow venv bench bench-smoke clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch is pinned to the CPU wheel that lies on these machines; everything else via constraints.txt
	$(PY) -m pip install --quiet torch==2.13.0 -c constraints.txt
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	# benchmarks/panels.py's baselines: statsforecast declares pandas<3 but runs with ours (its deps are in dev)
	$(PY) -m pip install --quiet -c constraints.txt --no-deps statsforecast==2.1.1
	touch $(STAMP)

venv: $(STAMP)

# a new run folder each time: lstmcast never overwrites a trained run
DEMO_RUN = runs/demo-$(shell date +%Y%m%d-%H%M%S)

# runs/demo-latest points at the newest demo run (README's commands use it)
demo: $(STAMP)
	$(eval RUN := $(DEMO_RUN))
	$(VENV)/bin/lstmcast train --run $(RUN)
	$(VENV)/bin/lstmcast predict $(RUN) --out $(RUN)/forecast.csv
	ln -sfn $(notdir $(RUN)) runs/demo-latest
	@echo "run folder: $(RUN) (also runs/demo-latest); open $(RUN)/report.html"
	@echo "the CLI: $(VENV)/bin/lstmcast, or run 'source $(VENV)/bin/activate' once and then lstmcast"

# the default suite: every FAULTS row (docs/FAULTS.md names a fast test for each; tests/test_fault_table.py
# checks it), ~3 minutes on 2 cores; the slow end-to-end tests (real kills, several ranks, tuning workers,
# browser) run in `make test-slow`, and CI runs both
test: lint
	$(PY) -m pytest -n 2 -q -p no:cacheprovider -m "not slow"

# ruff (lint and import order) and mypy on the parts pyproject.toml names ([tool.ruff], [tool.mypy] files)
lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/mypy

test-slow: $(STAMP)
	$(PY) -m pytest -n 2 -q -p no:cacheprovider -m slow

bench: $(STAMP)
	$(PY) benchmarks/train_speed.py

# every benchmark in its tiny --smoke form (each benchmarks/*.py not starting with _ accepts --smoke); CI runs
# the same through tests/integration/test_benchmarks_smoke.py in `make test-slow`
bench-smoke: $(STAMP)
	for b in benchmarks/[!_]*.py; do echo "== $$b --smoke"; $(PY) $$b --smoke || exit 1; done

clean:
	rm -rf $(VENV) runs
