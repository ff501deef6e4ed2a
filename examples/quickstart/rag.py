# rag.py
import dspy
from durable_dspy import durable_program, durable_tool

@durable_tool                                   # an ordinary function becomes a Temporal activity
def search_web(query: str) -> str:
    return f"Paris is the capital of France. ({query})"

@durable_program                                # a dspy.Module class gets a generated Temporal workflow
class RAG(dspy.Module):
    def __init__(self):
        super().__init__()
        self.answer = dspy.ChainOfThought("context, question -> answer")

    def forward(self, question: str):           # plain sync forward (or async aforward), unchanged DSPy
        return self.answer(context=search_web(question), question=question)
