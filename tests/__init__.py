"""Tests for netplugins; run with C{python -m twisted.trial tests}."""
