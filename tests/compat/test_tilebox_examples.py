"""Tilebox's documented examples and runner-test workflows, written as Tilebox users write them
(sync tasks, the mapping job cache, a blocking client, no event loop), run on swath's embedded
runner: ProducerTask/ConsumerTask, CacheGroupDemo, the Fibonacci workflow, the flaky task,
optional subtasks and progress."""

from __future__ import annotations

import random
from pathlib import Path

from swath import (
    BlockingClient,
    ExecutionContext,
    InMemoryCache,
    JobState,
    LocalFileSystemCache,
    ProgressInfo,
    Task,
    TaskState,
)


# -- ProducerTask / ConsumerTask (Tilebox docs: caches) -----------------------------------------
class ProducerTask(Task):
    def execute(self, context: ExecutionContext) -> None:
        context.job_cache["data"] = b"my_binary_data_to_store"
        context.submit_subtask(ConsumerTask())


class ConsumerTask(Task):
    def execute(self, context: ExecutionContext) -> None:
        data = context.job_cache["data"]
        context.job_cache["seen"] = b"Read " + data + b" from cache"


def test_producer_consumer(tmp_path: Path) -> None:
    """The consumer reads what the producer stored, through a local-disk cache."""
    cache = LocalFileSystemCache(tmp_path / "cache")
    with BlockingClient(":memory:") as client:
        job = client.jobs().submit("producer-consumer", ProducerTask())
        client.runner(tasks=[ProducerTask, ConsumerTask], cache=cache).run_all()
        assert client.jobs().find(job).state == JobState.COMPLETED
        seen = client.blocking_cache(cache).group(job.id)["seen"]
    assert seen == b"Read my_binary_data_to_store from cache"


# -- CacheGroupDemo (Tilebox docs: cache groups) -------------------------------------------------
class CacheGroupDemo(Task):
    n: int

    def execute(self, context: ExecutionContext) -> None:
        produce_numbers = context.submit_subtask(ProduceRandomNumbers(self.n))
        context.submit_subtask(PrintSum(), depends_on=[produce_numbers])


class ProduceRandomNumbers(Task):
    n: int

    def execute(self, context: ExecutionContext) -> None:
        for i in range(self.n):
            context.submit_subtask(ProduceRandomNumber(i))


class ProduceRandomNumber(Task):
    index: int

    def execute(self, context: ExecutionContext) -> None:
        number = random.randint(0, 100)
        group = context.job_cache.group("random_numbers")
        group[f"key_{self.index}"] = number.to_bytes(1, "big")


class PrintSum(Task):
    def execute(self, context: ExecutionContext) -> None:
        group = context.job_cache.group("random_numbers")
        numbers = []
        for key in group:
            number = group[key]
            numbers.append(int.from_bytes(number, "big"))
        context.job_cache["sum"] = str(sum(numbers)).encode()
        context.job_cache["count"] = str(len(numbers)).encode()


def test_cache_group_demo() -> None:
    """PrintSum runs after every producer (depends_on waits for the whole subtree) and sums
    all 20 numbers of the group."""
    cache = InMemoryCache()
    tasks: list[type[Task]] = [CacheGroupDemo, ProduceRandomNumbers, ProduceRandomNumber, PrintSum]
    with BlockingClient(":memory:") as client:
        job = client.jobs().submit("cache-groups", CacheGroupDemo(20))
        client.runner(tasks=tasks, cache=cache).run_all()
        assert client.jobs().find(job).state == JobState.COMPLETED
        job_cache = client.blocking_cache(cache).group(job.id)
        group = job_cache.group("random_numbers")
        numbers = [int.from_bytes(group[key], "big") for key in group]
        assert len(numbers) == 20
        assert int(job_cache["sum"]) == sum(numbers)
        assert job_cache["count"] == b"20"


# -- the Fibonacci workflow (Tilebox runner tests) ----------------------------------------------
def int_to_bytes(n: int) -> bytes:
    return n.to_bytes(1, "big")


def bytes_to_int(b: bytes) -> int:
    return int.from_bytes(b, "big")


class FibonacciTask(Task):
    n: int

    def execute(self, context: ExecutionContext) -> None:
        cache = context.job_cache
        key = f"fib_{self.n}"
        if key in cache:
            return
        if self.n <= 2:
            cache[key] = int_to_bytes(1)
        else:
            fib_n_1 = context.submit_subtask(FibonacciTask(self.n - 1))
            fib_n_2 = context.submit_subtask(FibonacciTask(self.n - 2))
            context.submit_subtask(SumResultTask(self.n), depends_on=[fib_n_1, fib_n_2])


class SumResultTask(Task):
    n: int

    def execute(self, context: ExecutionContext) -> None:
        cache = context.job_cache
        fib_n_1 = bytes_to_int(cache[f"fib_{self.n - 1}"])
        fib_n_2 = bytes_to_int(cache[f"fib_{self.n - 2}"])
        cache[f"fib_{self.n}"] = int_to_bytes(fib_n_1 + fib_n_2)


def test_runner_with_fibonacci_workflow() -> None:
    """fib(1..7) end up in the job's cache: the job cache is the runner cache's group named
    by the job id, as in Tilebox."""
    cache = InMemoryCache()
    with BlockingClient(":memory:") as client:
        job = client.jobs().submit("fibonacci", FibonacciTask(7))
        runner = client.runner(tasks=[FibonacciTask, SumResultTask], cache=cache)
        runner.run_all()
        job_cache = client.blocking_cache(cache).group(job.id)
        fibonacci_numbers = [bytes_to_int(job_cache[f"fib_{i}"]) for i in range(1, 8)]
        assert fibonacci_numbers == [1, 1, 2, 3, 5, 8, 13]
        assert client.jobs().find(job).state == JobState.COMPLETED


# -- the flaky task (Tilebox runner tests) ------------------------------------------------------
class FlakyTask(Task):
    def execute(self, context: ExecutionContext) -> None:
        if "succeed" in context.job_cache:
            return
        raise ValueError("This task always fails if the cache doesn't contain 'succeed'")


def test_runner_with_flaky_task() -> None:
    """A failed job is retried with ``jobs().retry`` and completes once the cache lets it."""
    cache = InMemoryCache()
    with BlockingClient(":memory:") as client:
        job_client = client.jobs()
        job = job_client.submit("flaky-task", FlakyTask())
        runner = client.runner(tasks=[FlakyTask], cache=cache, retry_delay=0)
        runner.run_all()
        assert job_client.find(job).state == JobState.FAILED
        assert job_client.retry(job) == 1
        runner.run_all()
        assert job_client.find(job).state == JobState.FAILED
        job_client.retry(job)
        client.blocking_cache(cache).group(job.id)["succeed"] = b"1"
        runner.run_all()
        assert job_client.find(job).state == JobState.COMPLETED


# -- optional subtasks (Tilebox docs: optional subtasks) ----------------------------------------
class OptionalParent(Task):
    def execute(self, context: ExecutionContext) -> None:
        flaky = context.submit_subtask(FailingTask(), optional=True)
        context.submit_subtask(AfterTask(), depends_on=[flaky])


class FailingTask(Task):
    def execute(self, context: ExecutionContext) -> None:
        raise RuntimeError("this optional subtask fails")


class AfterTask(Task):
    def execute(self, context: ExecutionContext) -> None:
        context.job_cache["after"] = b"ran"


def test_optional_subtask() -> None:
    """A failed optional subtask is FAILED_OPTIONAL; its dependent still runs and the job
    completes."""
    cache = InMemoryCache()
    with BlockingClient(":memory:") as client:
        job = client.jobs().submit("optional", OptionalParent())
        client.runner(tasks=[OptionalParent, FailingTask, AfterTask], cache=cache).run_all()
        assert client.jobs().find(job).state == JobState.COMPLETED
        states = {t.name: t.state for t in client.jobs().tasks(job)}
        assert states["FailingTask"] == TaskState.FAILED_OPTIONAL
        assert states["AfterTask"] == TaskState.COMPLETED
        assert client.blocking_cache(cache).group(job.id)["after"] == b"ran"


# -- progress (Tilebox runner tests) ------------------------------------------------------------
class ProgressTask(Task):
    n: int

    def execute(self, context: ExecutionContext) -> None:
        context.progress("test").add(self.n)
        context.submit_subtasks([ProgressLeafTask(i) for i in range(self.n)])


class ProgressLeafTask(Task):
    i: int

    def execute(self, context: ExecutionContext) -> None:
        context.progress("test").done(1)


def test_runner_with_workflow_tracking_progress() -> None:
    """The job's progress indicator ends at 4 of 4."""
    with BlockingClient(":memory:") as client:
        job = client.jobs().submit("progress-task", ProgressTask(4))
        client.runner(tasks=[ProgressTask, ProgressLeafTask], cache=InMemoryCache()).run_all()
        job = client.jobs().find(job)
        assert job.state == JobState.COMPLETED
        assert job.progress == [ProgressInfo("test", 4, 4)]
