# Developer entry points; each is also a script usable without make.

PYTHON ?= .venv/bin/python

.PHONY: demo test bench

# tac/demo.tac in the foreground: every service on 127.0.0.1 (./scripts/demo).
demo:
	./scripts/demo

# Install what the tests need, then ruff, mypy and every trial test (./scripts/test).
test:
	./scripts/test

# The benchmark suite; BENCH_ARGS passes options, e.g. BENCH_ARGS=--quick.
bench:
	@[ -x $(PYTHON) ] || ./scripts/test bench.tests.test_bench
	$(PYTHON) -m bench $(BENCH_ARGS)
