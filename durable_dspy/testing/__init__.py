"""Testing helpers: a scripted OpenAI-compatible LM server (offline, deterministic), a replay checker, and a
worker process to SIGKILL in crash tests.

Example:
    >>> with ScriptedLMServer() as server:
    ...     lm = dspy.LM("openai/test-model", api_base=server.url + "/v1", api_key="sk-test", cache=False)
"""

__all__ = [
    "ChatRequest",
    "RecordedRequest",
    "ReplayReport",
    "ScriptedLMServer",
    "WorkerProcess",
    "check_histories",
    "request_key",
]

from ._lm_server import ChatRequest, RecordedRequest, ScriptedLMServer, request_key
from ._process import WorkerProcess
from ._replay import ReplayReport, check_histories
