"""Tilebox task definitions port unchanged: execute-less task classes, duplicate registration,
protobuf message fields (as Tilebox's ``tests/test_task.py`` and ``tests/runner/test_runner.py``
exercise them)."""

from __future__ import annotations

import base64
import json
import re

import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from swath import Client, ExecutionContext, InMemoryCache, Task
from swath.task import TaskRegistry, decode_input, encode_input


class SimpleTask(Task):
    """No execute: a class that only submits work (a web service, a notebook)."""


class SimpleTaskWithIdentifier(Task):
    @staticmethod
    def identifier() -> tuple[str, str]:
        return "tilebox.tests.SimpleTask", "v3.2"


class FlakyTask(Task):
    def execute(self, context: ExecutionContext) -> None:
        pass


class ExplicitIdentifierTaskV1(Task):
    @classmethod
    def identifier(cls) -> tuple[str, str]:
        return "tilebox.com/explicit", "v1.0"

    def execute(self, context: ExecutionContext) -> None:
        pass


class ExplicitIdentifierTaskV1Again(Task):
    @classmethod
    def identifier(cls) -> tuple[str, str]:
        return "tilebox.com/explicit", "v1.0"

    def execute(self, context: ExecutionContext) -> None:
        pass


class ExplicitIdentifierTaskV2(Task):
    @classmethod
    def identifier(cls) -> tuple[str, str]:
        return "tilebox.com/explicit", "v2.0"

    def execute(self, context: ExecutionContext) -> None:
        pass


def test_task_validation_simple_task() -> None:
    """A task class without execute is valid (Tilebox: ``executable is False``); it keeps its
    identifier and its input round-trips."""
    assert SimpleTask.identifier() == ("SimpleTask", "v0.0")
    assert SimpleTaskWithIdentifier.identifier() == ("tilebox.tests.SimpleTask", "v3.2")
    assert decode_input(SimpleTask, encode_input(SimpleTask())) == SimpleTask()


async def test_task_without_execute_can_be_submitted_not_registered() -> None:
    """Code that only submits work submits an execute-less task; a runner refuses to register it
    (TypeError, naming the class)."""
    async with Client(":memory:") as client:
        job = await client.jobs().submit("submit-only", SimpleTask())
        assert job.name == "submit-only"
        with pytest.raises(TypeError, match="SimpleTask has no execute method"):
            client.runner(tasks=[SimpleTask], cache=InMemoryCache())


def test_runner_disallow_duplicate_task_identifiers() -> None:
    """Registering a class twice, or two classes with one identifier, is Tilebox's ValueError;
    another version of the same name is fine."""
    with pytest.raises(
        ValueError,
        match=re.escape("Duplicate task identifier: A task 'FlakyTask' with version 'v0.0'"),
    ):
        TaskRegistry([FlakyTask, FlakyTask])
    with pytest.raises(
        ValueError,
        match=re.escape("A task 'tilebox.com/explicit' with version 'v1.0' is already"),
    ):
        TaskRegistry([ExplicitIdentifierTaskV1, ExplicitIdentifierTaskV1Again])
    registry = TaskRegistry([ExplicitIdentifierTaskV1, ExplicitIdentifierTaskV2])
    assert registry.identifiers() == ["tilebox.com/explicit v1.0", "tilebox.com/explicit v2.0"]


async def test_client_runner_disallow_duplicate_task_identifiers() -> None:
    """The same through ``client.runner``: the runner is never made."""
    async with Client(":memory:") as client:
        with pytest.raises(ValueError, match="Duplicate task identifier"):
            client.runner(tasks=[FlakyTask, FlakyTask], cache=InMemoryCache())


# -- protobuf fields ---------------------------------------------------------------------------
class ExampleProtobufTaskWithSingleProtobufArg(Task):
    arg: Timestamp


class ExampleTaskWithNestedProtobuf(Task):
    x: str
    nested: Duration


class ProtobufEverywhere(Task):
    maybe: Timestamp | None
    many: list[Timestamp]
    pair: tuple[Duration, Timestamp]
    by_name: dict[str, Duration]
    nothing: Duration | None = None


def _ts(seconds: int) -> Timestamp:
    return Timestamp(seconds=seconds, nanos=7)


def test_serialize_deserialize_task_protobuf() -> None:
    """A protobuf message field round-trips; inside the JSON it is the base64 text of
    ``SerializeToString()`` (Tilebox's encoding of a message in JSON)."""
    task = ExampleProtobufTaskWithSingleProtobufArg(_ts(123))
    data = encode_input(task)
    assert json.loads(data) == {"arg": base64.b64encode(_ts(123).SerializeToString()).decode()}
    assert decode_input(ExampleProtobufTaskWithSingleProtobufArg, data) == task


def test_serialize_deserialize_task_nested_protobuf() -> None:
    """A message next to other fields round-trips."""
    task = ExampleTaskWithNestedProtobuf("Hello", Duration(seconds=5))
    assert decode_input(ExampleTaskWithNestedProtobuf, encode_input(task)) == task


def test_protobuf_in_optional_list_tuple_dict() -> None:
    """Messages nested in Optional, list, tuple and dict values round-trip, None included."""
    task = ProtobufEverywhere(
        maybe=_ts(1),
        many=[_ts(2), _ts(3)],
        pair=(Duration(seconds=4), _ts(5)),
        by_name={"a": Duration(seconds=6)},
    )
    back = decode_input(ProtobufEverywhere, encode_input(task))
    assert back == task
    assert isinstance(back.many[1], Timestamp)
    empty = ProtobufEverywhere(maybe=None, many=[], pair=(Duration(), Timestamp()), by_name={})
    assert decode_input(ProtobufEverywhere, encode_input(empty)) == empty


def test_protobuf_wrong_value_is_a_clear_error() -> None:
    """Input that is not the base64 of a message fails to decode with a ValidationError."""
    import msgspec

    with pytest.raises(msgspec.ValidationError, match="base64"):
        decode_input(ExampleProtobufTaskWithSingleProtobufArg, b'{"arg": "not base64!"}')
    with pytest.raises(msgspec.ValidationError):
        decode_input(ExampleProtobufTaskWithSingleProtobufArg, b'{"arg": 12}')


class ProtobufLeaf(Task):
    when: Timestamp
    durations: list[Duration]

    def execute(self, context: ExecutionContext) -> None:
        total = sum(d.seconds for d in self.durations)
        context.job_cache["result"] = f"{self.when.seconds}:{total}".encode()


async def test_protobuf_task_runs_on_a_runner() -> None:
    """A task with protobuf fields is submitted, stored, claimed and executed."""
    cache = InMemoryCache()
    async with Client(":memory:") as client:
        job = await client.jobs().submit(
            "proto", ProtobufLeaf(_ts(42), [Duration(seconds=1), Duration(seconds=2)])
        )
        await client.runner(tasks=[ProtobufLeaf], cache=cache).run_all()
        assert (await client.jobs().find(job.id)).state == "COMPLETED"
        assert await cache.group(job.id).get("result") == b"42:3"
