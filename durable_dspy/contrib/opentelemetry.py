"""OpenTelemetry traces for durable runs (``pip install 'durable-dspy[otel]'``).

Example:
    >>> from durable_dspy.contrib.opentelemetry import TracingPlugin
    >>> durable_dspy.serve(task_queue="rag", lm=lm, plugins=[TracingPlugin()])
    >>> client = await durable_dspy.connect(plugins=[TracingPlugin()])
"""

__all__ = ["CAPTURE_CONTENT_ENV", "GenAIInterceptor", "TracingPlugin", "provider_and_model"]

from .._tracing import CAPTURE_CONTENT_ENV, GenAIInterceptor, TracingPlugin, provider_and_model
