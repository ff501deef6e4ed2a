"""Activity options, spelled with Temporal's own names, and the defaults for LM and tool calls."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from temporalio.common import RetryPolicy

# An LM call that can never succeed on retry: the provider refused the request itself.
NON_RETRYABLE_LM_ERRORS = [
    "LMAuthError",
    "LMBillingError",
    "LMInvalidRequestError",
    "ContextWindowExceededError",
    "LMUnsupportedModelError",
    "LMConfigurationError",
    "LMNotConfiguredError",
    "LMUnsupportedFeatureError",
    "LMCollectionLimitError",
    "PayloadTooLargeError",
    "PayloadsTooLarge",  # the SDK's own refusal of an oversized result, when durable_dspy could not check first
    "SerializationError",
]

# A tool call that can never succeed on retry: the tool said so, or its arguments or result cannot cross into history.
NON_RETRYABLE_TOOL_ERRORS = [
    "NonRetryableToolError",
    "ToolArgumentError",
    "PayloadTooLargeError",
    "PayloadsTooLarge",
    "SerializationError",
]


@dataclass(frozen=True)
class ActivityOptions:
    """Options for the activities a durable program schedules, named as in ``workflow.execute_activity``.

    Example:
        >>> ActivityOptions(start_to_close_timeout=timedelta(seconds=30), retry_policy=RetryPolicy(maximum_attempts=3))
    """

    start_to_close_timeout: timedelta | None = None
    schedule_to_close_timeout: timedelta | None = None
    schedule_to_start_timeout: timedelta | None = None
    heartbeat_timeout: timedelta | None = None
    retry_policy: RetryPolicy | None = None
    task_queue: str | None = None

    def merged(self, other: ActivityOptions | None) -> ActivityOptions:
        """These options with every field ``other`` sets taking precedence.

        A retry policy in ``other`` replaces this one, but keeps this one's non-retryable error types: those
        errors can never succeed on retry, whatever the policy.
        """
        if other is None:
            return self
        changes = {
            f.name: getattr(other, f.name) for f in dataclasses.fields(other) if getattr(other, f.name) is not None
        }
        if other.retry_policy is not None and self.retry_policy is not None:
            theirs = list(other.retry_policy.non_retryable_error_types or ())
            extra = [t for t in self.retry_policy.non_retryable_error_types or () if t not in theirs]
            changes["retry_policy"] = dataclasses.replace(
                other.retry_policy, non_retryable_error_types=[*theirs, *extra]
            )
        return dataclasses.replace(self, **changes)

    def as_kwargs(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) is not None}


OPTION_NAMES = frozenset(f.name for f in dataclasses.fields(ActivityOptions))

# LM and tool activities heartbeat while they wait (see _lm_activity.heartbeating), so a worker that dies
# mid-call is noticed within heartbeat_timeout instead of start_to_close_timeout, and a cancelled run's
# activities learn of it at their next heartbeat.
HEARTBEAT_TIMEOUT = timedelta(seconds=5)

DEFAULT_LM_OPTIONS = ActivityOptions(
    start_to_close_timeout=timedelta(minutes=10),
    heartbeat_timeout=HEARTBEAT_TIMEOUT,
    retry_policy=RetryPolicy(
        initial_interval=timedelta(seconds=1),
        backoff_coefficient=2.0,
        maximum_interval=timedelta(seconds=60),
        non_retryable_error_types=NON_RETRYABLE_LM_ERRORS,
    ),
)

DEFAULT_TOOL_OPTIONS = ActivityOptions(
    start_to_close_timeout=timedelta(minutes=5),
    heartbeat_timeout=HEARTBEAT_TIMEOUT,
    retry_policy=RetryPolicy(
        initial_interval=timedelta(seconds=1),
        maximum_interval=timedelta(seconds=60),
        maximum_attempts=5,
        non_retryable_error_types=NON_RETRYABLE_TOOL_ERRORS,
    ),
)


def options_from_kwargs(kwargs: dict[str, Any], *, what: str) -> ActivityOptions | None:
    """Build options from Temporal-named keyword arguments, rejecting unknown names with the valid choices."""
    if not kwargs:
        return None
    unknown = sorted(set(kwargs) - OPTION_NAMES)
    if unknown:
        from ._errors import DefinitionError

        raise DefinitionError(
            f"{what}: unknown activity option(s) {unknown}. Valid options (Temporal's names): {sorted(OPTION_NAMES)}."
        )
    return ActivityOptions(**kwargs)
