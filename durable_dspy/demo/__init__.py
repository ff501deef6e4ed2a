"""The bundled demo: a ReAct agent with two durable tools (search over a bundled corpus, a safe calculator).

``durable-dspy demo`` runs it, kills its worker mid-run and resumes it on another. It is also an APP for the other
commands, e.g. ``durable-dspy dev durable_dspy.demo``.
"""

__all__ = ["QUESTION", "ResearchAgent", "calculate", "search"]

from .agent import QUESTION, ResearchAgent, calculate, search
