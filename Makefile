# Two commands for a new user: `make demo` (benchmark, CPU, a few minutes) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
# A CPU build of torch keeps the install small; override for CUDA, e.g. TORCH_SPEC="torch".
TORCH_SPEC ?= torch==2.13.0

.PHONY: install demo test lint mutation clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/oprl bench inventory/one_store_lost --set lead_time=4 --set penalty=9 --csv demo_results.csv

test: install
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check .

# Mutation testing: break each learner/reference on purpose in a temporary copy and check that
# a test fails (benchmarks/mutations.py; `--operators FILE --tests ...` for operator mutations).
mutation: install
	OMP_NUM_THREADS=1 $(PY) benchmarks/mutations.py

clean:
	rm -rf $(VENV) runs demo_results.csv
