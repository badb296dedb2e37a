"""ProducerTask and ConsumerTask: the consumer reads what the producer wrote to the job cache.

Run it: ``python examples/producer_consumer.py`` (an in-memory store and cache).
"""

from __future__ import annotations

import asyncio
import json
import random

from swath import Client, ExecutionContext, InMemoryCache, Task


class ProducerTask(Task):
    num_values: int

    async def execute(self, context: ExecutionContext) -> None:
        values = [random.randint(10, 99) for _ in range(self.num_values)]
        await context.job_cache.put("some_data", json.dumps(values).encode())
        context.submit_subtask(ConsumerTask())


class ConsumerTask(Task):
    async def execute(self, context: ExecutionContext) -> None:
        data = json.loads(await context.job_cache.get("some_data"))
        total = sum(data)
        await context.job_cache.put("sum", str(total).encode())
        print(f"Sum of {len(data)} values: {total}")


TASKS: list[type[Task]] = [ProducerTask, ConsumerTask]


async def main(database: str = ":memory:") -> tuple[list[int], int]:
    """Run one job; return what the producer wrote and what the consumer computed."""
    cache = InMemoryCache()
    async with Client(database) as client:
        job = await client.jobs().submit("producer-consumer", ProducerTask(5))
        await client.runner(TASKS, cache).run_all()
        job_cache = cache.group(job.id)
        values = json.loads(await job_cache.get("some_data"))
        return values, int(await job_cache.get("sum"))


if __name__ == "__main__":
    asyncio.run(main())
