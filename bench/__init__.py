"""
The netplugins benchmark suite: netplugins services measured side by side with
their peers in one run.  C{python -m bench} runs it and writes
C{docs/benchmarks.md}; see L{bench.suite} for what is measured against what.
"""
