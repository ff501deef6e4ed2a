# worker.py: the LM and its API key live here, and only here
import dspy, durable_dspy, rag

durable_dspy.serve(task_queue="rag", lm=dspy.LM("openai/gpt-4o-mini"))  # embedded Temporal server if none is configured
