# Two commands on a fresh machine: `make run` (the pipeline on the bundled
# sample) and `make test` (the test suite; what CI runs). Both create the
# Python 3.10 environment from the hash-locked requirements first.

VENV       := .venv
PY         := $(VENV)/bin/python
LOCK       := requirements/core.lock
# Found, or installed on a fresh machine, by requirements/bootstrap.sh; evaluated
# only by the targets that use them.
PYTHON310   = $(shell requirements/bootstrap.sh python)
UV          = $(shell requirements/bootstrap.sh uv)
export TF_CPP_MIN_LOG_LEVEL ?= 1
export PYTHONPATH := $(CURDIR)

.PHONY: env run test test-core test-faults test-quick bench bench-scale bench-tflite lock clean

env: $(VENV)/.synced

# $(call make_venv,<venv dir>,<lock file>): a Python 3.10 venv synced to the lock
# (uv and Python 3.10 found or installed first).
define make_venv
	requirements/bootstrap.sh venv $(1) $(2)
	@touch $(1)/.synced
endef

$(VENV)/.synced: $(LOCK) requirements/bootstrap.sh
	$(call make_venv,$(VENV),$(LOCK))

# `make run` also learns from the bundled unlabeled pool; RUN_ARGS= runs without.
RUN_ARGS   ?= --unlabeled data/fashion_mnist_unlabeled
run: env
	$(PY) -m pipeline run $(RUN_ARGS) $(ARGS)

# Every pytest run lists its 25 slowest tests, so CI's log shows where the time
# goes, and uses two workers: one real pipeline run keeps about one core busy.
# Tests that share a costly set-up share a worker, longest groups first
# (tests/conftest.py; xdist would otherwise start the groups with most tests).
PYTEST     := $(PY) -m pytest --durations=25 -n 2 --dist loadgroup --no-loadscope-reorder

# What CI runs: the core tests (unit, end-to-end and fault tests) and the
# Airflow tests in their own venv, both venvs made first, then the two suites at
# once (the core suite alone leaves about a fifth of the two cores idle);
# each suite's output is shown whole when it ends. Any pytest exit code but 0
# fails it, including 5 (no tests collected).
test: env env-airflow
	$(MAKE) --no-print-directory -j2 --output-sync=target test-core test-airflow
# (test-core already holds test-faults: pytest -m faults tests is a subset of it.)

test-core: env
	$(PYTEST) tests $(ARGS)

# Killed and concurrent runs of the real pipeline (tests/test_faults.py).
test-faults: env
	$(PYTEST) -m faults tests $(ARGS)

# Minutes instead of most of an hour: the tests that need no full pipeline run
# (pytest.ini's `pipeline` and `faults` markers left out) and, on the other
# worker meanwhile, the one end-to-end run marked `quick`.
test-quick: env
	$(PYTEST) -m "quick or not (pipeline or faults)" tests $(ARGS)

bench: env
	$(PY) bench/pipeline_timing.py $(ARGS)

# The whole pipeline on 1k, 5k and 20k generated 640x480 photos, beside the
# previous design (bench/scale_photos.py; hours, not part of `make test`).
bench-scale: env
	$(PY) bench/scale_photos.py $(ARGS)

# Latency per image of the newest registry version's TFLite models (float,
# dynamic range, int8) at 1 and 2 threads, and their eval accuracy
# (bench/tflite_latency.py; after `make run`, about a minute).
bench-tflite: env
	$(PY) bench/tflite_latency.py $(ARGS)

# Label-efficiency benchmark (bench/label_efficiency.py; not part of `make
# test`): the core env, plus Animal-MNIST from bench.lock installed with
# --no-deps (its wheel declares tensorflow, pandas, scikit-learn and numpy
# unpinned; core.lock pins them and must stay as it is), plus the Debian
# package with the Fashion-MNIST train and test files.
BENCH_LOCK     := requirements/bench.lock
FMNIST_PACKAGE := dataset-fashion-mnist
FMNIST_TRAIN   := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

.PHONY: bench-env bench-labels bench-data-quality bench-trust lock-bench

bench-env: $(VENV)/.bench-synced $(FMNIST_TRAIN)

# Redone after every core sync, which removes packages outside core.lock.
$(VENV)/.bench-synced: $(VENV)/.synced $(BENCH_LOCK)
	$(UV) pip install --python $(PY) --no-deps --require-hashes -r $(BENCH_LOCK)
	@touch $@

$(FMNIST_TRAIN):
	@sudo=; [ "$$(id -u)" = 0 ] || sudo=sudo; \
	  { $$sudo apt-get update -qq && $$sudo apt-get install -y -qq $(FMNIST_PACKAGE); } \
	  || { echo "Could not install the Debian package $(FMNIST_PACKAGE) (Fashion-MNIST);" \
	            "install it, then rerun: sudo apt-get install -y $(FMNIST_PACKAGE)" >&2; exit 1; }
	@test -f $@ || { echo "$(FMNIST_PACKAGE) is installed but $@ is missing" >&2; exit 1; }

bench-labels: bench-env
	$(PY) bench/label_efficiency.py $(ARGS)

# The data-quality audit against planted label flips and altered copies
# (bench/data_quality.py; about 10 minutes).
bench-data-quality: bench-env
	$(PY) bench/data_quality.py $(ARGS)

# Calibration and unknown-image detection against other data sets
# (bench/trust.py; about 5 minutes).
bench-trust: bench-env
	$(PY) bench/trust.py $(ARGS)

# Locks animal-mnist alone: its dependencies come from core.lock.
lock-bench:
	$(UV) pip compile --python "$(PYTHON310)" --no-deps --generate-hashes requirements/bench.in -o $(BENCH_LOCK)

# Re-resolve the pinned stacks after editing requirements/*.in (the Airflow
# group includes core.in, so both locks pin the same core versions).
lock: lock-airflow lock-bench
	$(UV) pip compile --python "$(PYTHON310)" --generate-hashes requirements/core.in -o $(LOCK)

clean:
	rm -rf outputs

# Airflow target (docs/orchestrators.md): Airflow 2 lives in its own venv and
# lock group, kept out of the core environment; `make test` runs its tests last.
AIRFLOW_VENV := .venv-airflow
AIRFLOW_PY   := $(AIRFLOW_VENV)/bin/python
AIRFLOW_LOCK := requirements/airflow.lock

.PHONY: env-airflow test-airflow lock-airflow

env-airflow: $(AIRFLOW_VENV)/.synced

$(AIRFLOW_VENV)/.synced: $(AIRFLOW_LOCK) requirements/bootstrap.sh
	$(call make_venv,$(AIRFLOW_VENV),$(AIRFLOW_LOCK))

# A real Airflow on SQLite in a temporary AIRFLOW_HOME: DAG import, structure,
# and one `airflow dags test` run of the pipeline on tiny data.
test-airflow: env-airflow
	$(AIRFLOW_PY) -m pytest --durations=25 tests/airflow $(ARGS)

lock-airflow:
	$(UV) pip compile --python "$(PYTHON310)" --generate-hashes requirements/airflow.in -o $(AIRFLOW_LOCK)
