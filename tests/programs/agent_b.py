"""An agent whose tool is called `search`, like agent_a's: the two must not clash on one worker."""

import dspy

from durable_dspy import durable_program, durable_tool


@durable_tool
def search(query: str) -> str:
    """Search the B corpus."""
    return f"B-result for {query}"


@durable_program
class AgentB(dspy.Module):
    def __init__(self):
        super().__init__()
        self.react = dspy.ReAct("question -> answer", tools=[search], max_iters=3)

    def forward(self, question: str):
        return self.react(question=question)
