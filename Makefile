# Two commands: `make run` sets everything up and starts the app; `make test` sets everything up and runs the suite.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 8501
TEST_WORKERS ?= 2   # pytest-xdist workers: TensorFlow, browser and subprocess waits overlap on 2 cores (3 were slower)

HEAD ?= 127.0.0.1:6379   # the Ray head that `make ray-node` joins
RAY_PORT ?= 6379

.PHONY: run test lint format clean ray-head ray-node

$(VENV)/.installed: requirements.txt requirements-ray.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

run: $(VENV)/.installed
	$(PY) -m core serve --port $(PORT)   # pages and API (/api/v1) on one port: server.py

test: $(VENV)/.installed
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

# A Ray cluster for jobs (README: "Ray cluster"): the head on the app's machine, a node on every other machine.
ray-head: $(VENV)/.installed
	$(VENV)/bin/ray start --head --port $(RAY_PORT) --include-dashboard false --disable-usage-stats

ray-node: $(VENV)/.installed
	$(VENV)/bin/ray start --address $(HEAD) --disable-usage-stats

lint: $(VENV)/.installed
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .

format: $(VENV)/.installed
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
