"""
Tests for the benchmark harness itself (bench/), apart from the product's
tests in C{tests}; run with C{python -m twisted.trial bench.tests}.
"""
