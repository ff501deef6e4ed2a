"""A support-ticket triage program, imported by both worker.py and app.py.

Production habits shown here: explicit Temporal names (they are contracts with running workflows, so renaming
the class or moving the module does not break runs in flight), tool timeouts and retry policies, a typed result.
"""

from __future__ import annotations

import os
from datetime import timedelta

import dspy
from temporalio.common import RetryPolicy

from durable_dspy import NonRetryableToolError, durable_program, durable_tool

TASK_QUEUE = os.environ.get("SUPPORT_TASK_QUEUE", "support")

ORDERS = {
    "A-1001": {"status": "shipped", "carrier": "DHL", "eta": "2 days"},
    "A-1002": {"status": "delayed", "carrier": "UPS", "eta": "unknown"},
}


@durable_tool(
    name="support.lookup_order",
    start_to_close_timeout=timedelta(seconds=15),
    retry_policy=RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=5),
)
async def lookup_order(order_id: str) -> dict[str, str]:
    """An order's status (in real life: a call to the order service, retried by Temporal when it fails)."""
    order = ORDERS.get(order_id.strip().upper())
    if order is None:
        raise NonRetryableToolError(f"no order {order_id!r}")  # retrying cannot make it exist
    return order


@durable_program(name="support.Triage", start_to_close_timeout=timedelta(minutes=2))
class Triage(dspy.Module):
    def __init__(self):
        super().__init__()
        self.classify = dspy.Predict("ticket -> category: Literal['shipping', 'billing', 'other'], order_id: str")
        self.reply = dspy.ChainOfThought("ticket, order_status -> reply")

    def forward(self, ticket: str):
        triage = self.classify(ticket=ticket)
        status = "not an order question"
        if triage.category == "shipping":
            try:
                status = str(lookup_order(triage.order_id))
            except Exception as exc:  # the tool's failure, after its retries: answer without it
                status = f"lookup failed: {exc}"
        reply = self.reply(ticket=ticket, order_status=status).reply
        return dspy.Prediction(category=triage.category, order_status=status, reply=reply)
