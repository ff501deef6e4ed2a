"""Benchmarks of durable_dspy against its floor (bare Temporal) and against plain DSPy. Run ``python -m bench``."""
