# Two commands on a fresh machine: `make demo` (the main job) and `make test` (the whole suite).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast bench s3

$(STAMP): pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch 2.14.1 with torchvision 0.29.1 (LPIPS needs torchvision); on these machines both come from local disk
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -c constraints.txt -e ".[test]"
	touch $@

# the main job: held-out digits -> local Zarr -> restore flow on a local Dask cluster -> summary and grid
demo: $(STAMP)
	OMP_NUM_THREADS=1 PREFECT_SERVER_ANALYTICS_ENABLED=false $(VENV)/bin/priorflow demo

# a real S3 server for the tests: Ceph radosgw from Debian's packages (needs root for apt)
s3:
	bash scripts/local-s3.sh install

TEST_ENV := PRIORFLOW_REQUIRE_S3=1 OMP_NUM_THREADS=1 PREFECT_SERVER_ANALYTICS_ENABLED=false PREFECT_HOME=$(CURDIR)/.prefect-test

# every tier, two test processes (one per core of these machines): what CI runs
test: $(STAMP) s3
	$(TEST_ENV) $(PY) -m pytest -q -p no:cacheprovider -n 2

# the fast tier alone: without the slower one (-m slow: quality checks of the bundled priors, kill trials)
test-fast: $(STAMP) s3
	$(TEST_ENV) $(PY) -m pytest -q -p no:cacheprovider -n 2 -m "not slow"

bench: $(STAMP)
	for task in sr_x4 inpaint_70 deblur_gauss; do for group in pixel latent; do \
		OMP_NUM_THREADS=1 $(PY) benchmarks/solvers.py run --task $$task --group $$group || exit 1; done; done
	$(PY) benchmarks/solvers.py load-time
	$(PY) benchmarks/solvers.py report --group pixel && $(PY) benchmarks/solvers.py report --group latent
