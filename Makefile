# Developer entry points.  Only `bench` so far; `demo` and `test` come with
# their owners.

PYTHON ?= .venv/bin/python

.PHONY: bench

# The benchmark suite; BENCH_ARGS passes options, e.g. BENCH_ARGS=--quick.
bench:
	$(PYTHON) -m bench $(BENCH_ARGS)
