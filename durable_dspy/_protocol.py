"""Typed payloads that cross the workflow/activity boundary. Keep them small: they are stored in history."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DEFAULT_LM_KEY = "default"


@dataclass(frozen=True)
class LMInfo:
    """What the workflow needs to know about a worker-side LM: no credentials, no client objects."""

    key: str
    model: str
    model_type: str
    kwargs: dict[str, Any]
    supports_function_calling: bool = False
    supports_reasoning: bool = False
    supports_response_schema: bool = False
    supported_params: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class DescribeRequest:
    """Sent once at the start of a run; the worker echoes the version fields so they are pinned in history."""

    program: str
    keys: list[str]
    fingerprint: str = ""
    fingerprint_description: str = ""
    state_hash: str | None = None


@dataclass(frozen=True)
class DescribeResult:
    lms: list[LMInfo]
    fingerprint: str = ""
    fingerprint_description: str = ""
    state_hash: str | None = None
    state: dict[str, Any] | None = None  # the compiled state itself, when it fits the payload budget
    payload_limit: int | None = None  # what workflow code checks activity inputs against (None: cannot know)


@dataclass(frozen=True)
class LMCallRequest:
    """One LM call: the rendered messages and the call's kwargs; the worker holds the LM itself."""

    program: str
    lm_key: str
    messages: list[dict[str, Any]]
    kwargs: dict[str, Any]
    caller: str = ""


@dataclass(frozen=True)
class LMCallResult:
    outputs: list[Any]
    usage: dict[str, Any]
    cost: float | None = None
    cost_details: dict[str, Any] = field(default_factory=dict)
    response_model: str | None = None
    caller: str = ""  # echoed from the request, so a replay can tell whether the same predictor made the call


@dataclass(frozen=True)
class RunResult:
    """What a program's workflow returns: the prediction's fields (or the plain return value) and usage."""

    kind: str  # "prediction" or "value"
    value: Any
    lm_usage: dict[str, Any] | None = None
    completions: dict[str, list[Any]] | None = None  # field -> one value per completion, when n > 1
