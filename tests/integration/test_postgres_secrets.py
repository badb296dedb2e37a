"""A password in the database URL never shows in logs, errors, reprs or the CLI's output."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import traceback

import asyncpg
import pytest

from swath import Client
from swath.store.base import StoreError
from swath.store.postgres import PostgresJobStore, redact_dsn
from tests.integration._postgres_worker import Put
from tests.services.postgres import PASSWORD, PostgresCluster
from tests.services.process import free_port

SWATH = [sys.executable, "-c", "from swath.cli import main; main()"]


def test_redact_dsn_masks_every_form_of_password() -> None:
    """The authority's password and ``password=`` parameters are masked; the rest is kept."""
    assert (
        redact_dsn("postgresql://u:p%40ss@db:5432/x?sslmode=require")
        == "postgresql://u:***@db:5432/x?sslmode=require"
    )
    assert redact_dsn("postgresql://u@db/x?password=hunter2") == "postgresql://u@db/x?password=***"
    assert redact_dsn("postgresql://db/x") == "postgresql://db/x"
    assert redact_dsn("postgres://u:@db/x") == "postgres://u:***@db/x"


def _full_text(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc))


async def test_password_never_in_logs_or_reprs(
    postgres_cluster: PostgresCluster,
    postgres_password_dsn: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With a password-authenticated role and every logger at DEBUG, a store opens, runs jobs,
    loses its pooled and LISTEN connections (the server terminates them, so the store logs its
    retries and reconnects), and closes: the password appears in no log record, not in
    ``store.url``, ``repr(store)`` or ``repr(client)``."""
    assert PASSWORD in postgres_password_dsn
    caplog.set_level(logging.DEBUG)
    async with Client(postgres_password_dsn) as client:
        store = client.store
        assert isinstance(store, PostgresJobStore)
        signal = store.work_signal("default")
        job = await client.jobs().submit("secret", Put(0))
        assert await signal.wait(5.0)
        async with asyncio.timeout(10):
            while not store.listening:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        connections = store.listen_connections
        # cut every connection of the store: the next operation retries, the listener reconnects
        admin = await asyncpg.connect(postgres_cluster.dsn())
        try:
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1",
                "swath_pw",
            )
        finally:
            await admin.close()
        assert (await client.jobs().find(job.id)).id == job.id
        async with asyncio.timeout(30):
            while store.listen_connections == connections:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        texts = [store.url, repr(store), repr(client)]
    logged = "\n".join(f"{r.getMessage()} {r.exc_text or ''} {r.args!r}" for r in caplog.records)
    assert "listening again" in logged  # the reconnect really was logged
    for text in [*texts, logged]:
        assert PASSWORD not in text


async def test_password_never_in_errors(postgres_cluster: PostgresCluster) -> None:
    """A wrong password and an unreachable server both fail with a ``StoreError`` whose message
    and whole traceback (causes included) name the redacted URL, never the password."""
    postgres_cluster.ensure_password_role()
    wrong = postgres_cluster.dsn("postgres", user="swath_pw", password="Wr0ng-s3cret-pw")
    with pytest.raises(StoreError) as refused:
        await PostgresJobStore(wrong).open()
    assert "Wr0ng-s3cret-pw" not in _full_text(refused.value)
    assert "swath_pw:***@" in str(refused.value)

    unreachable = f"postgresql://u:Unr3achable-pw@127.0.0.1:{free_port()}/db"
    with pytest.raises(StoreError) as down:
        await PostgresJobStore(unreachable, retry_for=0.3).open()
    assert "Unr3achable-pw" not in _full_text(down.value)
    assert "ConnectionRefusedError" in str(down.value) or "Connect" in str(down.value)


def test_password_never_in_cli_output(postgres_password_dsn: str) -> None:
    """``swath jobs ls`` against a password-protected database (URL in $SWATH_DATABASE_URL, and
    as ``--database``) prints jobs but not the password; with a wrong password it fails without
    printing it either."""
    env = {**os.environ, "SWATH_DATABASE_URL": postgres_password_dsn}
    ok = subprocess.run(
        [*SWATH, "jobs", "ls"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    assert PASSWORD not in ok.stdout + ok.stderr

    wrong = postgres_password_dsn.replace(PASSWORD, "Wr0ng-cli-pw")
    bad = subprocess.run(
        [*SWATH, "--database", wrong, "jobs", "ls"],
        env={k: v for k, v in os.environ.items() if k != "SWATH_DATABASE_URL"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert bad.returncode != 0
    assert "Wr0ng-cli-pw" not in bad.stdout + bad.stderr
    assert "***" in bad.stdout + bad.stderr  # it does say which database it failed on
