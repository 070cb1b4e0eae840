"""An asyncio worker module for the tests: it exposes `worker`, an AsyncWorker."""

import asyncio
import os

import jobq

worker = jobq.AsyncWorker(os.environ.get("APP_DSN", ""), queues=["aio_proc"], concurrency=2)


@worker.handler("aio.sleep")
async def sleep(job: jobq.AsyncJob) -> dict:
    await job.conn.execute("INSERT INTO aio_effect VALUES (%s, 'proc')", (job.id,))
    await asyncio.sleep(job.payload["sleep"])
    return {"slept": job.payload["sleep"]}
