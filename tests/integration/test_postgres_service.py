"""The throwaway PostgreSQL cluster the store tests rely on behaves as they assume."""

from __future__ import annotations

import asyncpg
import pytest

from tests.services.postgres import PostgresCluster


async def test_fresh_database_per_test_is_empty_and_private(
    postgres_cluster: PostgresCluster, postgres_dsn: str
) -> None:
    """Each test's database starts empty and is not the cluster's default database."""
    conn = await asyncpg.connect(postgres_dsn)
    try:
        assert await conn.fetchval("SELECT current_database()") != "postgres"
        tables = await conn.fetchval(
            "SELECT count(*) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', "
            "'information_schema')"
        )
        assert tables == 0
    finally:
        await conn.close()


async def test_password_role_needs_its_password(
    postgres_cluster: PostgresCluster, postgres_password_dsn: str
) -> None:
    """The password role authenticates with its password and is refused without it, so the
    password-leak tests exercise real authentication."""
    conn = await asyncpg.connect(postgres_password_dsn)
    await conn.close()
    wrong = postgres_password_dsn.replace(":s3cr3t", ":wrong", 1)
    assert wrong != postgres_password_dsn
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(wrong)


async def test_restart_cuts_connections(
    postgres_cluster: PostgresCluster, postgres_dsn: str
) -> None:
    """``restart()`` really restarts the server: an open connection is cut, a new one works."""
    conn = await asyncpg.connect(postgres_dsn)
    pid = await conn.fetchval("SELECT pg_backend_pid()")
    postgres_cluster.restart()
    with pytest.raises((asyncpg.PostgresConnectionError, asyncpg.InterfaceError, OSError)):
        await conn.fetchval("SELECT 1")
    conn.terminate()
    conn = await asyncpg.connect(postgres_dsn)
    try:
        assert await conn.fetchval("SELECT pg_backend_pid()") != pid
    finally:
        await conn.close()
