# app.py
import asyncio, durable_dspy, rag

async def main():
    client = await durable_dspy.connect("localhost:7233")
    prediction = await rag.RAG.run(client, question="What is the capital of France?", task_queue="rag")
    print(prediction.answer, prediction.get_lm_usage())

asyncio.run(main())
