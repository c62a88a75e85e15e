# Two commands on a fresh machine: `make run` (the pipeline on the bundled
# sample) and `make test` (the test suite; what CI runs). Both create the
# Python 3.10 environment from the hash-locked requirements first.

VENV       := .venv
PY         := $(VENV)/bin/python
LOCK       := requirements/core.lock
# Python 3.10 from pyenv where it is installed, else from PATH.
PYTHON310  := $(shell p="$$(pyenv root 2>/dev/null)/versions/3.10.13/bin/python3.10"; \
                if [ -x "$$p" ]; then echo "$$p"; else command -v python3.10; fi)
UV         := $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
export TF_CPP_MIN_LOG_LEVEL ?= 1
export PYTHONPATH := $(CURDIR)

.PHONY: env run test bench lock clean

env: $(VENV)/.synced

$(VENV)/.synced: $(LOCK)
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	@test -n "$(PYTHON310)" || { echo "Python 3.10 not found (pyenv install 3.10.13)"; exit 1; }
	@test -x $(PY) || $(UV) venv --seed --python "$(PYTHON310)" $(VENV)
	$(UV) pip sync --python $(PY) $(LOCK)
	@touch $@

run: env
	$(PY) -m pipeline run $(ARGS)

test: env
	$(PY) -m pytest tests $(ARGS)

bench: env
	$(PY) bench/pipeline_timing.py $(ARGS)

# Re-resolve the pinned stack after editing requirements/core.in.
lock:
	$(UV) pip compile --python "$(PYTHON310)" --generate-hashes requirements/core.in -o $(LOCK)

clean:
	rm -rf outputs
