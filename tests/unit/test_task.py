"""Task definitions: dataclass inputs, JSON serialization of every documented type, identifier
and signature checks at class definition, and the version-matching rule."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import msgspec
import pytest

from swath import ExecutionContext, Task
from swath.task import TaskRegistry, decode_input, encode_input, is_async


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


@dataclasses.dataclass
class Box:
    x: int
    label: str | None = None


class Everything(Task):
    s: str
    i: int
    f: float
    b: bool
    raw: bytes
    nothing: None
    items: list[int]
    pair: tuple[str, int]
    mapping: dict[str, float]
    tags: set[str]
    maybe: int | None
    either: int | str
    mode: Literal["fast", "slow"]
    box: Box
    boxes: list[Box]
    color: Color
    when: dt.datetime
    day: dt.date
    span: dt.timedelta
    ident: uuid.UUID
    path: Path
    amount: Decimal
    default: int = 3

    async def execute(self, context: ExecutionContext) -> None:
        pass


def everything() -> Everything:
    return Everything(
        s="é",
        i=2**53 + 1,
        f=0.1,
        b=True,
        raw=b"\x00\xff",
        nothing=None,
        items=[1, 2],
        pair=("a", 1),
        mapping={"k": 1.5},
        tags={"x", "y"},
        maybe=None,
        either="text",
        mode="slow",
        box=Box(1, "one"),
        boxes=[Box(2), Box(3, "three")],
        color=Color.GREEN,
        when=dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30))),
        day=dt.date(2024, 2, 29),
        span=dt.timedelta(days=1, microseconds=5),
        ident=uuid.UUID("12345678-1234-5678-1234-567812345678"),
        path=Path("/data/scene.tif"),
        amount=Decimal("1.10"),
    )


def test_subclasses_are_dataclasses_with_defaults() -> None:
    """A Task subclass is a dataclass: fields in order, defaults, equality."""
    assert dataclasses.is_dataclass(Everything)
    assert [f.name for f in dataclasses.fields(Everything)][:3] == ["s", "i", "f"]
    assert everything() == everything()
    assert everything().default == 3


def test_every_documented_type_roundtrips_through_json() -> None:
    """encode/decode preserves every documented field type, time zones included."""
    task = everything()
    data = encode_input(task)
    assert isinstance(data, bytes)
    assert msgspec.json.decode(data)["s"] == "é"
    back = decode_input(Everything, data)
    assert back == task
    assert back.when.utcoffset() == dt.timedelta(hours=5, minutes=30)
    assert isinstance(back.path, Path)
    assert isinstance(back.tags, set)
    assert isinstance(back.box, Box)


class Opaque:
    pass


def test_unsupported_field_type_is_a_type_error_at_definition() -> None:
    """A field type that JSON cannot carry is rejected when the class is defined."""
    with pytest.raises(TypeError, match="unsupported type"):

        class Bad(Task):
            thing: Opaque

            async def execute(self, context: ExecutionContext) -> None:
                pass

    with pytest.raises(TypeError, match="unsupported type"):

        class Nested(Task):
            things: dict[str, list[Opaque]]

            async def execute(self, context: ExecutionContext) -> None:
                pass


def test_unserializable_value_is_a_type_error_at_submit() -> None:
    """A value that cannot be serialized (an object in an Any field) is a TypeError when the task
    is encoded for submission."""

    class Loose(Task):
        anything: Any

        async def execute(self, context: ExecutionContext) -> None:
            pass

    assert decode_input(Loose, encode_input(Loose([1, "a"]))) == Loose([1, "a"])
    with pytest.raises(TypeError, match="cannot serialize"):
        encode_input(Loose(object()))
    with pytest.raises(TypeError, match="Task instance"):
        encode_input("not a task")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "source",
    [
        "def execute(self) -> None: pass",
        "def execute(self, context, extra) -> None: pass",
        "def execute(context) -> None: pass",
        "execute = 42",
        "async def execute(self, context):\n        yield 1",
    ],
)
def test_wrong_execute_signature_is_a_type_error(source: str) -> None:
    """execute must be a method taking (self, context), plain or async: anything else is a
    TypeError at class definition."""
    with pytest.raises(TypeError, match="execute"):
        exec(f"class Bad(Task):\n    {source}\n", {"Task": Task})


def test_missing_execute_is_valid_but_not_registrable() -> None:
    """A Task subclass without execute is a valid (submit-only) class; registering it with a
    runner is a TypeError."""

    class NoExecute(Task):
        x: int

    assert decode_input(NoExecute, encode_input(NoExecute(3))) == NoExecute(3)
    with pytest.raises(TypeError, match="no execute method"):
        TaskRegistry([NoExecute])


def test_execute_may_take_optional_extras_and_is_inherited() -> None:
    """Extra parameters with defaults are allowed; subclasses inherit a checked execute."""

    class Base(Task):
        def execute(self, context: ExecutionContext, verbose: bool = False) -> None:
            pass

    class Child(Base):
        y: int = 0

    assert not is_async(Child)
    assert is_async(Everything)


@pytest.mark.parametrize(
    "identifier",
    [
        ("", "v1.0"),
        ("name", "1.0"),
        ("name", "v1"),
        ("name", "v1.0.0"),
        ("name",),
        "name",
        ("x", 1),
        ("name", "v1.0\n"),  # old code: the regex's $ matched before a final newline
        ("name", "v\u0661.\u0660"),  # Arabic-Indic digits: old code's \d took them
        ("name", "v1.\uff10"),  # a fullwidth zero
        ("na\x00me", "v1.0"),  # PostgreSQL refuses NUL: old code took it, submit failed
        ("na\ud800me", "v1.0"),  # a lone surrogate has no UTF-8 form
    ],
)
def test_invalid_identifier_is_a_type_error(identifier: object) -> None:
    """identifier() must return (non-empty name, 'vMAJOR.MINOR'); else TypeError at definition."""
    with pytest.raises(TypeError):

        class Bad(Task):
            @classmethod
            def identifier(cls) -> Any:
                return identifier

            async def execute(self, context: ExecutionContext) -> None:
                pass


def test_default_identifier_is_class_name_v0_0() -> None:
    """Without an override, identifier() is (class name, 'v0.0')."""
    assert Everything.identifier() == ("Everything", "v0.0")


def _versioned(name: str, version: str) -> type[Task]:
    class V(Task):
        @classmethod
        def identifier(cls) -> tuple[str, str]:
            return name, version

        async def execute(self, context: ExecutionContext) -> None:
            pass

    return V


def test_registry_version_rule() -> None:
    """A runner that registered name vX.Z runs name vX.Y when Z >= Y, and the newest minor wins;
    another major or a newer minor is not found."""
    v12, v13, v20 = _versioned("t", "v1.2"), _versioned("t", "v1.3"), _versioned("t", "v2.0")
    registry = TaskRegistry([v12, v13, v20])
    assert registry.find("t", "v1.0") == (v13, True)
    assert registry.find("t", "v1.3") == (v13, True)
    assert registry.find("t", "v1.4") is None
    assert registry.find("t", "v2.0") == (v20, True)
    assert registry.find("t", "v3.0") is None
    assert registry.find("other", "v1.0") is None
    assert registry.find("t", "garbage") is None
    with pytest.raises(ValueError, match="Duplicate task identifier"):
        TaskRegistry([v12, _versioned("t", "v1.2")])
    with pytest.raises(TypeError, match="Task subclasses"):
        TaskRegistry([int])  # type: ignore[list-item]


def test_unsupported_type_behind_a_forward_reference_fails_at_submit() -> None:
    """A field type that cannot be resolved at definition (a local class under postponed
    annotations) is checked at submit: unsupported is still a TypeError, before any runner."""

    class LocalOpaque:
        pass

    class Deferred(Task):
        thing: LocalOpaque

        async def execute(self, context: ExecutionContext) -> None:
            pass

    with pytest.raises(TypeError, match="LocalOpaque"):
        encode_input(Deferred(LocalOpaque()))


def test_forward_references_are_resolved_at_first_use() -> None:
    """A field annotated with a class defined later in the module is accepted at definition and
    checked when the task is first encoded."""
    assert decode_input(Later, encode_input(Later(DefinedAfter(1)))) == Later(DefinedAfter(1))


class Later(Task):
    value: DefinedAfter

    async def execute(self, context: ExecutionContext) -> None:
        pass


@dataclasses.dataclass
class DefinedAfter:
    n: int


def test_surrogates_in_inputs_and_job_names_are_type_errors_at_submit(tmp_path: Path) -> None:
    """A lone surrogate in a str input, or a NUL or a lone surrogate in a job name, is an
    ``InvalidTextError`` (a ``TypeError`` and a ``ValueError``) at submit, and nothing is stored;
    old code raised ``UnicodeEncodeError`` from the encoder, or took the name."""
    import asyncio

    from swath import Client, InvalidTextError

    class Echo(Task):
        text: str

        async def execute(self, context: ExecutionContext) -> None:
            pass

    with pytest.raises(InvalidTextError, match="surrogate") as bad_input:
        encode_input(Echo("a\udc80b"))
    assert isinstance(bad_input.value, TypeError)

    async def submit_all() -> int:
        async with Client(f"sqlite:///{tmp_path}/jobs.db") as client:
            for name in ("nul\x00name", "lone\ud800"):
                with pytest.raises(TypeError):
                    await client.jobs().submit(name, Echo("fine"))
            with pytest.raises(TypeError):
                await client.jobs().submit("fine", Echo("lone\udfff"))
            return len(await client.jobs().query())

    assert asyncio.run(submit_all()) == 0
