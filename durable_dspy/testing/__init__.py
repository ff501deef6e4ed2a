"""Testing helpers: a scripted OpenAI-compatible LM server (offline, deterministic) and a replay checker.

Example:
    >>> with ScriptedLMServer() as server:
    ...     lm = dspy.LM("openai/test-model", api_base=server.url + "/v1", api_key="sk-test", cache=False)
"""

__all__ = ["ChatRequest", "RecordedRequest", "ReplayReport", "ScriptedLMServer", "check_histories", "request_key"]

from ._lm_server import ChatRequest, RecordedRequest, ScriptedLMServer, request_key
from ._replay import ReplayReport, check_histories
