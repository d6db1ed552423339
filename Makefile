# Two commands on a fresh machine: `make demo` (the main job) and `make test` (the whole suite).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch 2.14.1 with torchvision 0.29.1 (LPIPS needs torchvision); on these machines both come from local disk
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e ".[test]"
	touch $@

demo: $(STAMP)
	$(VENV)/bin/priorflow demo

test: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) -m pytest -q

bench: $(STAMP)
	for task in sr_x4 inpaint_70 deblur_gauss; do $(PY) benchmarks/solvers.py run --task $$task || exit 1; done
	$(PY) benchmarks/solvers.py load-time
	$(PY) benchmarks/solvers.py report
