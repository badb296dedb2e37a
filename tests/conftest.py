"""Shared fixtures. Service-backed fixtures (S3, GCS, PostgreSQL) live in ``tests/services/``
and are loaded here; each starts its real server on a free loopback port and fails (never skips)
if it cannot."""

from __future__ import annotations

pytest_plugins = [
    "tests.conformance.backends",
    "tests.store.stores",
    "tests.services.postgres",
    "tests.services.gcs",
    "tests.services.s3",
]
