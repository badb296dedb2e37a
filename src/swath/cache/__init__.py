"""The cache layer: one protocol, several backends. It knows nothing of tasks or jobs."""

from __future__ import annotations

import importlib
from typing import Any

from swath._urls import URLError, parse_url, redact
from swath.cache._base import (
    DEFAULT_CHUNK_SIZE,
    Backend,
    Cache,
    CacheGroup,
    CacheWriter,
    Stat,
)
from swath.cache._retry import DEADLINE_OPTIONS
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


def cache_from_url(url: str, *, read_only: bool = False) -> Backend:
    """A backend from its URL form: ``memory://``, ``file:///path`` (or a plain path),
    ``s3://bucket/prefix``, ``gs://bucket/prefix``.

    ``s3://bucket`` and ``gs://bucket`` (no path) use the constructors' default prefix,
    ``jobs``, so a URL names the same objects as ``AmazonS3Cache("bucket")``; ``s3://bucket/``
    (a bare slash) is the bucket's root (``prefix=""``). Each backend's ``url()`` gives this form
    back. URLs are split by :func:`swath._urls.parse_url`; they carry no credentials.
    The cloud URLs take their deadlines as query options
    (``s3://bucket/prefix?read_timeout=30&operation_timeout=90``, see docs/s3.md).
    ``read_only=True`` gives a cache that refuses writes and creates nothing (a missing local
    directory is a :class:`~swath.errors.NotFoundError`)."""
    if not isinstance(url, str) or not url:
        raise ValueError(f"a cache URL is a non-empty str, not {url!r}")
    if "://" not in url:
        return LocalFileSystemCache(url, read_only=read_only)
    parts = parse_url(url)
    if parts.user is not None:
        raise URLError(
            "cache URLs carry no credentials (user:password@): give them to the backend's "
            "client (for S3, the AWS credential chain; for GCS, Application Default Credentials)"
        )
    if parts.query and parts.scheme not in ("s3", "gs", "gcs"):
        raise URLError(f"cache URLs take no query (?...): {redact(url)!r}")
    if parts.scheme == "memory":
        if parts.hostspec or parts.path:
            raise ValueError(f"memory:// names no place: {url!r}")
        return InMemoryCache()
    if parts.scheme == "file":
        if parts.hostspec in (".", ".."):  # file://./cache: a path relative to the working dir
            return LocalFileSystemCache(parts.hostspec + "/" + parts.path, read_only=read_only)
        if parts.hostspec not in ("", "localhost"):
            raise ValueError(f"file URLs name a local path, not a host: {url!r}")
        if not parts.path:
            raise ValueError(f"a file URL without a path: {url!r}")
        return LocalFileSystemCache("/" + parts.path, read_only=read_only)
    if parts.scheme in ("s3", "gs", "gcs"):
        if not parts.hostspec:
            raise ValueError(f"a {parts.scheme} URL names a bucket: {parts.scheme}://bucket/prefix")
        cls = __getattr__("AmazonS3Cache" if parts.scheme == "s3" else "GoogleStorageCache")
        options: dict[str, Any] = {"read_only": read_only}
        for name, value in parts.query:  # the deadlines: ?read_timeout=30&operation_timeout=90
            if name not in DEADLINE_OPTIONS:
                raise URLError(
                    f"a {parts.scheme} URL takes only the deadlines {list(DEADLINE_OPTIONS)} as "
                    f"query options, not {name!r}"
                )
            options[name] = value
        if parts.has_path:
            options["prefix"] = parts.path.strip("/")
        backend = cls(parts.hostspec, **options)
        assert isinstance(backend, Backend)
        return backend
    raise ValueError(f"unknown cache URL scheme {parts.scheme!r} in {redact(url)!r}")
