"""Optional integrations; each needs its extra (``pip install 'durable-dspy[otel]'``)."""
