# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python

.PHONY: demo test bench install clean

$(VENV)/.base: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	touch $@

# tests also exercise the calibration runner on the CPU, so they install torch (CPU build)
$(VENV)/.test: $(VENV)/.base
	$(PY) -m pip install --quiet -e '.[dev,calibrate]'
	touch $@

install: $(VENV)/.base

demo: $(VENV)/.base
	$(VENV)/bin/fleetsim perf --compare --model llama-2-70b --precision fp8 --workload mlperf-llama2-70b
	$(VENV)/bin/fleetsim run scenarios/flagship.yaml --out out/flagship --force --workers 2
	@echo "fleetsim is installed in $(VENV); to type 'fleetsim' yourself, activate it first:"
	@echo "  . $(VENV)/bin/activate"

test: $(VENV)/.test
	$(PY) -m pytest -n 2 -q

bench: $(VENV)/.test
	$(VENV)/bin/fleetsim calibrate engines --report benchmarks/results/engine_calibration.md
	$(PY) benchmarks/fidelity_mlperf.py
	$(VENV)/bin/fleetsim calibrate training --report benchmarks/results/training_calibration.md
	$(PY) benchmarks/fidelity_training.py
	$(PY) benchmarks/serving_speed.py
	$(PY) benchmarks/fidelity_serving.py
	$(PY) benchmarks/mlperf_server.py
	$(PY) benchmarks/fleet_speed.py
	$(PY) benchmarks/run_speed.py
	$(PY) benchmarks/mc_speed.py
	$(PY) benchmarks/scale.py
	$(PY) benchmarks/fuzz_large.py

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .hypothesis
