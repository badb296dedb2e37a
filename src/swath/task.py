"""Tasks: dataclasses with an ``execute(context)``, identified by name and ``vMAJOR.MINOR``.

Subclassing :class:`Task` turns the subclass into a dataclass and checks it at once: its
identifier, its ``execute`` signature and the types of its fields (everything that msgspec
encodes to JSON, plus ``pathlib.Path`` and protobuf messages). Mistakes are a ``TypeError`` at
class definition, never a crash later in a runner.

A class without ``execute`` is valid (code that only submits work declares the inputs and the
identifier); a runner refuses to register it. Protobuf message fields (the optional dependency
``protobuf``) are stored as Tilebox stores them inside its JSON: the base64 text of the message's
``SerializeToString()``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import inspect
import pathlib
import re
import sys
from collections.abc import Awaitable, Iterable
from typing import TYPE_CHECKING, Any, ClassVar, dataclass_transform

import msgspec
import msgspec.inspect as mi

from swath._validate import InvalidTextError, check_text

if TYPE_CHECKING:
    from swath.context import ExecutionContext

#: ``vMAJOR.MINOR`` in ASCII digits, matched whole (``fullmatch``: no trailing newline)
_VERSION = re.compile(r"v([0-9]+)\.([0-9]+)")
_NAME_MAX = 256


def _protobuf_message() -> type[Any] | None:
    """``google.protobuf.message.Message`` if protobuf is imported (a message class exists only
    once it is), else None: swath never imports protobuf itself."""
    module = sys.modules.get("google.protobuf.message")
    message = getattr(module, "Message", None)
    return message if isinstance(message, type) else None


def _is_protobuf_class(tp: object) -> bool:
    message = _protobuf_message()
    return message is not None and isinstance(tp, type) and issubclass(tp, message)


def _enc_hook(obj: Any) -> Any:
    if isinstance(obj, pathlib.PurePath):
        return str(obj)
    message = _protobuf_message()
    if message is not None and isinstance(obj, message):
        # as Tilebox: the message's wire bytes, base64 text inside the JSON
        return base64.b64encode(obj.SerializeToString()).decode("ascii")
    raise TypeError(f"cannot serialize a value of type {type(obj).__name__}: {obj!r}")


def _dec_hook(tp: type, obj: Any) -> Any:
    if isinstance(tp, type) and issubclass(tp, pathlib.PurePath) and isinstance(obj, str):
        return tp(obj)
    if _is_protobuf_class(tp):
        if not isinstance(obj, str):
            raise ValueError(f"expected the base64 text of a {tp.__name__} message")
        try:
            return tp.FromString(base64.b64decode(obj, validate=True))  # type: ignore[attr-defined]
        except (binascii.Error, ValueError):
            raise ValueError(f"not the base64 text of a {tp.__name__} message") from None
        except Exception as exc:  # protobuf's DecodeError
            raise ValueError(f"not a valid {tp.__name__} message: {exc}") from None
    raise NotImplementedError(f"cannot decode {tp!r}")


_ENCODER = msgspec.json.Encoder(enc_hook=_enc_hook)


def _check_type(info: mi.Type, where: str) -> None:
    """Raise TypeError if msgspec's view of a field type contains something JSON cannot carry."""
    if isinstance(info, mi.CustomType):
        if isinstance(info.cls, type) and issubclass(info.cls, pathlib.PurePath):
            return
        if _is_protobuf_class(info.cls):
            return
        raise TypeError(
            f"{where}: unsupported type {info.cls!r} (task inputs are serialized as JSON: use "
            "str, int, float, bool, bytes, None, list/tuple/dict/set, Optional/Union/Literal, "
            "dataclasses, Enum, datetime/date/time/timedelta, UUID, Path, Decimal, protobuf "
            "messages)"
        )
    for child in _children(info):
        _check_type(child, where)


def _children(info: mi.Type) -> Iterable[mi.Type]:
    if isinstance(info, mi.UnionType):
        yield from info.types
    elif isinstance(info, mi.ListType | mi.SetType | mi.FrozenSetType | mi.VarTupleType):
        yield info.item_type
    elif isinstance(info, mi.TupleType):
        yield from info.item_types
    elif isinstance(info, mi.DictType):
        yield info.key_type
        yield info.value_type
    elif isinstance(info, mi.DataclassType | mi.StructType | mi.TypedDictType | mi.NamedTupleType):
        for field in info.fields:
            yield field.type
    elif isinstance(info, mi.Metadata):
        yield info.type


def parse_version(version: str) -> tuple[int, int]:
    """``"v1.2"`` -> ``(1, 2)``; ValueError otherwise."""
    m = _VERSION.fullmatch(version) if isinstance(version, str) else None
    if m is None:
        raise ValueError(f"invalid version {version!r}: expected 'vMAJOR.MINOR', e.g. 'v1.0'")
    return int(m.group(1)), int(m.group(2))


def check_identifier(identifier: object, where: str) -> tuple[str, str]:
    if (
        not isinstance(identifier, tuple)
        or len(identifier) != 2
        or not all(isinstance(part, str) for part in identifier)
    ):
        raise TypeError(
            f"{where}.identifier() must return (name, 'vMAJOR.MINOR'), not {identifier!r}"
        )
    name, version = identifier
    check_text(name, f"{where}: the task name")  # no NUL, no lone surrogate
    if not name or len(name) > _NAME_MAX or name != name.strip() or "\n" in name:
        raise TypeError(
            f"{where}: invalid task name {name!r} (1-{_NAME_MAX} characters, no newline)"
        )
    try:
        parse_version(version)
    except ValueError as exc:
        raise TypeError(f"{where}: {exc}") from None
    return name, version


@dataclass_transform()
class Task:
    """Base class of tasks. Subclasses are dataclasses; their fields are the task's input.

    ``execute(self, context)`` is ``async def`` (runs on the runner's event loop, concurrently
    with other tasks) or plain ``def`` (runs in a worker thread)."""

    _swath_decoder: ClassVar[msgspec.json.Decoder[Any]]
    _swath_checked: ClassVar[bool]
    #: False for a class without ``execute`` (it can be submitted, not registered with a runner)
    _swath_executable: ClassVar[bool] = False
    _swath_timeout: ClassVar[float | None] = None

    def __init_subclass__(cls, *, timeout: float | None = None, **kwargs: Any) -> None:
        """``class T(Task, timeout=60)`` gives every execution of ``T`` a time limit of 60 s
        (submissions may pass their own ``timeout=``); subclasses inherit it."""
        super().__init_subclass__(**kwargs)
        if timeout is not None:
            if (
                not isinstance(timeout, int | float)
                or isinstance(timeout, bool)
                or not 0 < timeout < float("inf")
            ):
                raise TypeError(
                    f"task {cls.__qualname__}: timeout must be a positive number of seconds, "
                    f"not {timeout!r}"
                )
            cls._swath_timeout = float(timeout)
        dataclasses.dataclass(cls)
        where = f"task {cls.__qualname__}"
        check_identifier(cls.identifier(), where)
        cls._swath_executable = _check_execute(cls, where)
        cls._swath_checked = False
        # a forward reference not defined yet is checked again on first submit
        with contextlib.suppress(NameError):
            cls._check_fields()

    @classmethod
    def _check_fields(cls) -> None:
        if cls.__dict__.get("_swath_checked"):
            return
        where = f"task {cls.__qualname__}"
        try:
            info = mi.type_info(cls)
        except NameError:
            raise
        except Exception as exc:  # msgspec refuses the type outright
            raise TypeError(f"{where}: unsupported field type: {exc}") from None
        _check_type(info, where)
        cls._swath_decoder = msgspec.json.Decoder(cls, dec_hook=_dec_hook)
        cls._swath_checked = True

    @classmethod
    def identifier(cls) -> tuple[str, str]:
        """``(name, "vMAJOR.MINOR")``; by default ``(class name, "v0.0")``. A runner that
        registered ``name vX.Z`` runs a task submitted as ``name vX.Y`` when ``Z >= Y``."""
        return cls.__name__, "v0.0"

    def execute(self, context: ExecutionContext) -> Awaitable[None] | None:
        raise NotImplementedError


def _check_execute(cls: type[Task], where: str) -> bool:
    """Check ``cls.execute``; False if the class has none of its own or inherited below Task."""
    execute = cls.__dict__.get("execute")
    if execute is None:
        for base in cls.__mro__[1:]:
            if base is Task:
                return False  # submit-only: valid, but no runner registers it
            if "execute" in base.__dict__:
                return bool(getattr(base, "_swath_executable", True))  # checked with the base
        return False
    if not inspect.isfunction(execute):
        raise TypeError(f"{where}.execute must be a plain method, not {type(execute).__name__}")
    if inspect.isasyncgenfunction(execute) or inspect.isgeneratorfunction(execute):
        raise TypeError(f"{where}.execute must be a function or coroutine, not a generator")
    params = list(inspect.signature(execute).parameters.values())
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required_other = [
        p
        for p in params
        if p not in positional[:2]
        and p.default is p.empty
        and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    if len(positional) < 2 or required_other:
        raise TypeError(
            f"{where}.execute must have the signature execute(self, context), "
            f"not execute{inspect.signature(execute)}"
        )
    return True


def is_async(task_cls: type[Task]) -> bool:
    return inspect.iscoroutinefunction(task_cls.execute)


def encode_input(task: Task) -> bytes:
    """The task's input as JSON; TypeError for values that cannot be serialized."""
    if not isinstance(task, Task):
        raise TypeError(f"expected a Task instance, not {type(task).__name__}")
    try:
        type(task)._check_fields()
    except NameError as exc:
        raise TypeError(
            f"cannot resolve the field types of {type(task).__qualname__}: {exc} (task field "
            "types must be importable from the task's module)"
        ) from None
    try:
        return _ENCODER.encode(task)
    except UnicodeEncodeError as exc:  # a lone surrogate in a str field: not storable text
        raise InvalidTextError(
            f"cannot serialize the input of {type(task).__qualname__}: a str field is not valid "
            f"Unicode text (a lone surrogate: {exc.object[exc.start : exc.end]!r})"
        ) from None
    except (TypeError, msgspec.EncodeError) as exc:
        raise TypeError(f"cannot serialize the input of {type(task).__qualname__}: {exc}") from None


def decode_input(task_cls: type[Task], data: bytes) -> Task:
    """Rebuild a task from its JSON input (``msgspec.ValidationError``/``DecodeError`` if the
    input does not fit the class)."""
    task_cls._check_fields()
    task = task_cls._swath_decoder.decode(data)
    assert isinstance(task, task_cls)
    return task


class TaskRegistry:
    """The task classes a runner can execute, found by identifier and compatible version."""

    def __init__(self, tasks: Iterable[type[Task]]) -> None:
        self._by_major: dict[tuple[str, int], tuple[int, type[Task]]] = {}
        self._found: dict[tuple[str, str], tuple[type[Task], bool] | None] = {}
        if isinstance(tasks, type):
            raise TypeError(f"runner tasks are a list of Task subclasses, not the class {tasks!r}")
        registered: set[tuple[str, str]] = set()
        for cls in tasks:
            if not (isinstance(cls, type) and issubclass(cls, Task)) or cls is Task:
                raise TypeError(f"runner tasks must be Task subclasses, not {cls!r}")
            name, version = cls.identifier()
            if not cls._swath_executable:
                shown = cls.__qualname__ + ("" if name == cls.__name__ else f" ({name})")
                raise TypeError(
                    f"task {shown} has no execute method: it can be submitted, but a runner "
                    "cannot register it"
                )
            major, minor = parse_version(version)
            if (name, version) in registered:
                raise ValueError(
                    f"Duplicate task identifier: A task {name!r} with version {version!r} is "
                    "already registered."
                )
            registered.add((name, version))
            known = self._by_major.get((name, major))
            if known is None or known[0] < minor:
                self._by_major[(name, major)] = (minor, cls)

    def find(self, name: str, version: str) -> tuple[type[Task], bool] | None:
        """The task class for a submitted identifier and whether its execute is async."""
        key = (name, version)
        if key not in self._found:
            cls = self._find(name, version)
            self._found[key] = None if cls is None else (cls, is_async(cls))
        return self._found[key]

    def _find(self, name: str, version: str) -> type[Task] | None:
        try:
            major, minor = parse_version(version)
        except ValueError:
            return None
        known = self._by_major.get((name, major))
        if known is None or known[0] < minor:
            return None
        return known[1]

    def kinds(self) -> list[tuple[str, int, int]]:
        """``(name, major, newest minor)`` of every registered task: what a claim may take."""
        return sorted((n, major, minor) for (n, major), (minor, _) in self._by_major.items())

    def identifiers(self) -> list[str]:
        return sorted(f"{n} v{major}.{minor}" for (n, major), (minor, _) in self._by_major.items())
