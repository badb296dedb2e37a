"""The cache layer: one protocol, several backends. It knows nothing of tasks or jobs."""

from __future__ import annotations

import importlib
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from swath.cache._base import (
    DEFAULT_CHUNK_SIZE,
    Backend,
    Cache,
    CacheGroup,
    CacheWriter,
    Stat,
)
from swath.cache.keys import MAX_KEY_BYTES
from swath.cache.local import LocalFileSystemCache
from swath.cache.memory import InMemoryCache

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "MAX_KEY_BYTES",
    "AmazonS3Cache",
    "Backend",
    "Cache",
    "CacheGroup",
    "CacheWriter",
    "GoogleStorageCache",
    "InMemoryCache",
    "LocalFileSystemCache",
    "Stat",
    "cache_from_url",
]


_CLOUD = {"AmazonS3Cache": "swath.cache.s3", "GoogleStorageCache": "swath.cache.gcs"}


def __getattr__(name: str) -> Any:
    # The cloud backends import their optional dependencies only when asked for.
    if name in _CLOUD:
        return getattr(importlib.import_module(_CLOUD[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def cache_from_url(url: str) -> Backend:
    """A backend from its URL form: ``memory://``, ``file:///path`` (or a plain path),
    ``s3://bucket/prefix``, ``gs://bucket/prefix``. The cloud URLs take their deadlines as query
    options: ``s3://bucket/prefix?read_timeout=30&operation_timeout=90``."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "memory":
        return InMemoryCache()
    if scheme == "file":
        if parts.netloc in (".", ".."):  # file://./cache: a path relative to the working dir
            return LocalFileSystemCache(parts.netloc + unquote(parts.path))
        if parts.netloc not in ("", "localhost"):
            raise ValueError(f"file URLs name a local path, not a host: {url!r}")
        return LocalFileSystemCache(unquote(parts.path))
    if scheme == "":
        return LocalFileSystemCache(url)
    if scheme in ("s3", "gs", "gcs"):
        cls = __getattr__("AmazonS3Cache" if scheme == "s3" else "GoogleStorageCache")
        options = dict(parse_qsl(parts.query, keep_blank_values=True, strict_parsing=False))
        backend = cls(parts.netloc, prefix=unquote(parts.path).strip("/"), **options)
        assert isinstance(backend, Backend)
        return backend
    raise ValueError(f"unknown cache URL scheme {scheme!r} in {url!r}")
