"""CacheGroupDemo: ProduceRandomNumbers fans out ProduceRandomNumber tasks that each write one
key into the cache group "random_numbers"; PrintSum depends on ProduceRandomNumbers, so it runs
once that whole subtree is done, and sums every key of the group.

Run it: ``python examples/cache_groups.py`` (an in-memory store and cache).
"""

from __future__ import annotations

import asyncio
import random

from swath import Client, ExecutionContext, InMemoryCache, Task


class CacheGroupDemo(Task):
    n: int

    async def execute(self, context: ExecutionContext) -> None:
        produce_numbers = context.submit_subtask(ProduceRandomNumbers(self.n))
        context.submit_subtask(PrintSum(), depends_on=[produce_numbers])


class ProduceRandomNumbers(Task):
    n: int

    async def execute(self, context: ExecutionContext) -> None:
        context.submit_subtasks([ProduceRandomNumber(i) for i in range(self.n)])


class ProduceRandomNumber(Task):
    index: int

    async def execute(self, context: ExecutionContext) -> None:
        number = random.randint(0, 100)
        group = context.job_cache.group("random_numbers")
        await group.put(f"key_{self.index}", number.to_bytes(1, "big"))


class PrintSum(Task):
    async def execute(self, context: ExecutionContext) -> None:
        group = context.job_cache.group("random_numbers")
        numbers = [int.from_bytes(await group.get(key), "big") async for key in group]
        await context.job_cache.put("sum", str(sum(numbers)).encode())
        print(f"Sum of {len(numbers)} numbers: {sum(numbers)}")


TASKS: list[type[Task]] = [CacheGroupDemo, ProduceRandomNumbers, ProduceRandomNumber, PrintSum]


async def main(database: str = ":memory:", n: int = 100) -> tuple[list[int], int]:
    """Run one job; return the numbers in the group and the sum PrintSum computed."""
    cache = InMemoryCache()
    async with Client(database) as client:
        job = await client.jobs().submit("cache-groups", CacheGroupDemo(n))
        await client.runner(TASKS, cache).run_all()
        group = cache.group(job.id).group("random_numbers")
        numbers = [int.from_bytes(await group.get(key), "big") async for key in group]
        return numbers, int(await cache.group(job.id).get("sum"))


if __name__ == "__main__":
    asyncio.run(main())
