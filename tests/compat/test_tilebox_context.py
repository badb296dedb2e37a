"""Tilebox's ExecutionContext, as its users write tasks against it: progress with and without a
label, ``current_task`` (identifier, parent_id, input), and structured logging with keyword
fields (``context.logger.info("msg", scene_id=s)``) at every level."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from swath import Client, ExecutionContext, InMemoryCache, ProgressInfo, Task


class ProgressTask(Task):
    n: int

    def execute(self, context: ExecutionContext) -> None:
        context.progress("test").add(self.n)
        context.progress().add(self.n)
        context.submit_subtasks([ProgressLeafTask(i) for i in range(self.n)])


class ProgressLeafTask(Task):
    i: int

    def execute(self, context: ExecutionContext) -> None:
        context.progress("test").done(1)
        context.progress().done(1)


async def test_runner_with_workflow_tracking_progress() -> None:
    """Tilebox's progress workflow: a labelled indicator and the unlabelled one
    (``progress()``, stored under the label "") both reach 4 of 4."""
    async with Client(":memory:") as client:
        job = await client.jobs().submit("progress-task", ProgressTask(4))
        runner = client.runner(tasks=[ProgressTask, ProgressLeafTask], cache=InMemoryCache())
        await runner.run_all()
        job = await client.jobs().find(job)
        assert job.state == "COMPLETED"
        assert sorted(job.progress, key=lambda p: p.label) == [
            ProgressInfo("", 4, 4),
            ProgressInfo("test", 4, 4),
        ]


class Parent(Task):
    scene: str

    def execute(self, context: ExecutionContext) -> None:
        task = context.current_task
        record = context.job_cache.group("seen")
        record["parent"] = repr((tuple(task.identifier), task.parent_id, task.input)).encode()
        context.submit_subtask(Child(7))


class Child(Task):
    n: int

    @staticmethod
    def identifier() -> tuple[str, str]:
        return "tilebox.tests.Child", "v1.2"

    def execute(self, context: ExecutionContext) -> None:
        task = context.current_task
        assert task.identifier.name == "tilebox.tests.Child"
        assert task.identifier.version == "v1.2"
        context.job_cache.group("seen")["child"] = repr(
            (tuple(task.identifier), task.parent_id, task.input)
        ).encode()


async def test_current_task_identifier_parent_id_input() -> None:
    """``current_task.identifier`` is (name, version) with ``.name``/``.version``,
    ``parent_id`` is None for the root and the parent's id for a subtask, ``input`` the task's
    serialized input."""
    cache = InMemoryCache()
    async with Client(":memory:") as client:
        job = await client.jobs().submit("current", Parent("S2A"))
        await client.runner(tasks=[Parent, Child], cache=cache).run_all()
        tasks = await client.jobs().tasks(job)
        seen = cache.group(job.id).group("seen")
        assert (
            await seen.get("parent")
            == repr((("Parent", "v0.0"), None, b'{"scene":"S2A"}')).encode()
        )
        assert (
            await seen.get("child")
            == repr((("tilebox.tests.Child", "v1.2"), tasks[0].id, b'{"n":7}')).encode()
        )


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.format(record)  # formatting must work too
        self.records.append(record)


@pytest.fixture
def captured() -> Iterator[Capture]:
    handler = Capture()
    task_logger = logging.getLogger("swath.task")
    old_level = task_logger.level
    task_logger.addHandler(handler)
    task_logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        task_logger.removeHandler(handler)
        task_logger.setLevel(old_level)


class Logging(Task):
    scene_id: str

    def execute(self, context: ExecutionContext) -> None:
        log = context.logger
        log.debug("debug", scene_id=self.scene_id)
        log.info("tile done", scene_id=self.scene_id, ms=12)
        log.warning("warn %s", "arg", level_name="w")
        log.error("error", name="a field called name", message="and one called message")
        log.critical("critical", args=[1, 2], fields="clash")
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("failed", attempt=1)
        log.bind(band="B04").info("bound", extra={"old_style": True})


async def test_logger_keyword_fields_reach_logging(captured: Capture) -> None:
    """Keyword fields never raise, at any level, whatever their names; they reach the records
    as ``record.fields`` and as attributes (where a LogRecord attribute does not already have
    the name), next to job and task ids."""
    async with Client(":memory:") as client:
        job = await client.jobs().submit("logging", Logging("S2A_T32UNE"))
        await client.runner(tasks=[Logging], cache=InMemoryCache()).run_all()
        assert (await client.jobs().find(job)).state == "COMPLETED"
    by_msg = {r.getMessage(): r for r in captured.records}
    info = by_msg["tile done"]
    assert info.fields == {"scene_id": "S2A_T32UNE", "ms": 12}  # type: ignore[attr-defined]
    assert (info.scene_id, info.ms, info.job_id) == ("S2A_T32UNE", 12, job.id)  # type: ignore[attr-defined]
    assert by_msg["debug"].levelno == logging.DEBUG
    assert by_msg["warn arg"].level_name == "w"  # type: ignore[attr-defined]
    error = by_msg["error"]
    assert error.name == "swath.task"
    assert error.fields["name"] == "a field called name"  # type: ignore[attr-defined]
    assert by_msg["critical"].fields == {"args": [1, 2], "fields": "clash"}  # type: ignore[attr-defined]
    failed = by_msg["failed"]
    assert failed.exc_info is not None
    assert failed.attempt == 1
    bound = by_msg["bound"]
    assert bound.fields == {"band": "B04", "old_style": True}  # type: ignore[attr-defined]
    assert bound.filename == "test_tilebox_context.py"  # the caller's line, not swath's


async def test_logger_keyword_fields_when_level_disabled() -> None:
    """With the level disabled (the default WARNING for ``swath.task``), keyword fields are
    accepted and nothing is emitted."""
    task_logger = logging.getLogger("swath.task")
    old = task_logger.level
    task_logger.setLevel(logging.CRITICAL + 1)
    try:
        async with Client(":memory:") as client:
            job = await client.jobs().submit("quiet", Logging("S2A"))
            await client.runner(tasks=[Logging], cache=InMemoryCache()).run_all()
            assert (await client.jobs().find(job)).state == "COMPLETED"
    finally:
        task_logger.setLevel(old)
