"""Checks of what users hand swath, made at the point they hand it.

Every store must be able to save what a task or a caller gives it: text without NUL (PostgreSQL
refuses it) and without lone surrogates (no UTF-8 encoding exists for them), counts that fit a
signed 64-bit column. Checking here, where the value is handed over, turns what would be a
refusal deep inside a store transaction into a clear error at the caller's line.
"""

from __future__ import annotations

from swath.errors import SwathError

#: The largest count every store can hold (a signed 64-bit column).
INT64_MAX = 2**63 - 1


class InvalidTextError(SwathError, TypeError, ValueError):
    """Text a store cannot hold (NUL, a lone surrogate); both a ``TypeError`` and a
    ``ValueError``, so callers catching either see it."""


def text_problem(value: str) -> str | None:
    """Why ``value`` cannot be stored, or None if it can."""
    if "\x00" in value:
        return "contains a NUL character"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"is not valid Unicode text (a lone surrogate at index {exc.start})"
    return None


def check_text(value: object, what: str) -> str:
    """``value`` if it is a str every store can hold; ``TypeError`` for other types,
    :class:`InvalidTextError` for NUL or lone surrogates."""
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, not {type(value).__name__}")
    problem = text_problem(value)
    if problem is not None:
        raise InvalidTextError(f"{what} {problem}: {value!r}")
    return value


def storable_text(value: str) -> str:
    """``value`` with what no store can hold replaced (NUL by ``\\x00``, lone surrogates by
    their escapes): for text swath records on a user's behalf, such as error messages."""
    if text_problem(value) is None:
        return value
    value = value.replace("\x00", "\\x00")
    return value.encode("utf-8", "backslashreplace").decode("utf-8")


def _escaped(ch: str) -> str:
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def printable(text: object, *, multiline: bool = False) -> str:
    """``text`` safe to show on a terminal or in a diagram: what is not printable (control
    characters such as ESC, BEL, CR, C1 codes and DEL; format characters such as bidirectional
    overrides; line separators; lone surrogates; unassigned code points) as ``\\x1b``-style
    escapes. ``multiline`` keeps newlines and tabs (tracebacks)."""
    return "".join(
        ch if ch.isprintable() or (multiline and ch in "\n\t") else _escaped(ch) for ch in str(text)
    )


def check_count(value: object, what: str, *, maximum: int = INT64_MAX) -> int:
    """``value`` if it is an int in ``[0, maximum]`` (bool refused); ``TypeError`` for other
    types, ``ValueError`` out of range."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    if value < 0 or value > maximum:
        raise ValueError(f"{what} must be between 0 and {maximum}, not {value}")
    return value
