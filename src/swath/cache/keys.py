"""Key validation: the one place where the key rules of the cache contract live.

A key is ``/``-separated segments. A segment is non-empty, is not ``.`` or ``..`` and contains no
NUL, no control character (Unicode category Cc) and no backslash. The whole path, measured from
the root of a backend (so group prefixes count), is at most 1024 UTF-8 bytes. Every backend calls
:func:`split_key` before any I/O, so a bad key can never reach storage.
"""

from __future__ import annotations

import unicodedata

from swath.errors import InvalidKeyError

MAX_KEY_BYTES = 1024

Path = tuple[str, ...]


def _check_segment(segment: str, key: str) -> None:
    if not segment:
        raise InvalidKeyError(f"invalid key {key!r}: empty segment (leading, trailing or '//')")
    if segment in (".", ".."):
        raise InvalidKeyError(f"invalid key {key!r}: segment {segment!r} is not allowed")
    for ch in segment:
        if ch == "\\":
            raise InvalidKeyError(f"invalid key {key!r}: backslash is not allowed")
        if ch == "\x00" or unicodedata.category(ch) == "Cc":
            raise InvalidKeyError(
                f"invalid key {key!r}: control character U+{ord(ch):04X} is not allowed"
            )


def split_key(key: object, prefix: Path = ()) -> Path:
    """Validate ``key`` below ``prefix`` and return the full path as a tuple of segments."""
    if not isinstance(key, str):
        raise InvalidKeyError(f"a key must be a str, not {type(key).__name__}")
    if not key:
        raise InvalidKeyError("invalid key '': a key must not be empty")
    try:
        key.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidKeyError(f"invalid key {key!r}: not encodable as UTF-8") from exc
    segments = tuple(key.split("/"))
    for segment in segments:
        _check_segment(segment, key)
    path = prefix + segments
    size = len("/".join(path).encode("utf-8"))
    if size > MAX_KEY_BYTES:
        raise InvalidKeyError(
            f"invalid key {key!r}: the full key is {size} UTF-8 bytes, more than {MAX_KEY_BYTES}"
        )
    return path


def join(path: Path) -> str:
    """The ``/``-joined form of a path."""
    return "/".join(path)


def object_name(root: str, path: Path, service: str, limit: int = MAX_KEY_BYTES) -> str:
    """The name ``root + "/".join(path)`` of a value in an object store whose names are at most
    ``limit`` UTF-8 bytes (S3 and GCS: 1024), where ``root`` is the backend's prefix with its
    trailing ``/`` (or ``""``). Raises ``InvalidKeyError`` before any I/O if the name is longer,
    saying how much room the prefix leaves for keys."""
    name = root + join(path)
    size = len(name.encode("utf-8"))
    if size > limit:
        room = limit - len(root.encode("utf-8"))
        raise InvalidKeyError(
            f"invalid key {join(path)!r}: with the prefix {root.rstrip('/')!r} its {service} "
            f"object name is {size} UTF-8 bytes, more than {service}'s {limit} (keys may be "
            f"{room} bytes under this prefix, group names and '/' included)"
        )
    return name
