"""The benchmark behind scripts/benchmark.py: measure.py (timing, memory, environment), suites.py (op, model,
scaling), report.py (targets, tables, plots)."""
