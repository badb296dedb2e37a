"""A password in the database URL never shows in logs, errors, reprs or the CLI's output."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import traceback
from urllib.parse import quote

import asyncpg
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from swath import Client
from swath.cli import main
from swath.store.base import StoreError
from swath.store.postgres import PostgresJobStore, redact_dsn
from tests.integration._postgres_worker import Put
from tests.services.postgres import PASSWORD, PASSWORD_ROLE, PostgresCluster
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

    async def create_schema() -> None:  # reading commands create nothing: a runner would
        async with Client(postgres_password_dsn):
            pass

    asyncio.run(create_schema())
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


# -- any password, through the parser, the server, the CLI ----------------------------------------
def _pieces(secret: str, n: int = 6) -> list[str]:
    return [secret] if len(secret) <= n else [secret[i : i + n] for i in range(len(secret) - n + 1)]


def _leaked(secret: str, texts: list[str], context: str) -> list[str]:
    """6-character pieces of ``secret`` found in ``texts`` (pieces that are also part of the
    rest of the URL, such as the host, do not count: they are not the secret's). Six, not four:
    a random "Errn" is in every "[Errno 111]" without being the password's."""
    return [p for p in _pieces(secret) for t in texts if p in t and p not in context]


_UNREACHABLE_TRIED: list[str] = []


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    password=st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=8, max_size=20)
)
def test_any_password_connects_and_never_shows(
    postgres_cluster: PostgresCluster,
    postgres_password_dsn: str,
    caplog: pytest.LogCaptureFixture,
    password: str,
) -> None:
    """The password-role gets a random printable password (any of # / ? @ : % & =). Written
    percent-encoded into the URL, it connects: ``swath jobs ls`` (click's runner, in process)
    succeeds, and with a wrong password and with the server unreachable fails with exit code 3;
    no piece of the password (6 characters) is in the output, any log record, url or repr.
    Written raw, the URL either connects the same way or is refused in one line that quotes
    none of it (libpq's rules: a raw '@' or '/' cannot be told from the URL's own)."""
    database = postgres_password_dsn.rsplit("/", 1)[1]
    host = f"127.0.0.1:{postgres_cluster.port}"
    context = f"postgresql://{PASSWORD_ROLE}@{host}/{database}"
    caplog.set_level(logging.DEBUG)

    async def set_password(value: str) -> None:
        admin = await asyncpg.connect(postgres_cluster.dsn())
        try:
            literal = await admin.fetchval("SELECT quote_literal($1)", value)
            await admin.execute(f"ALTER ROLE {PASSWORD_ROLE} PASSWORD {literal}")
        finally:
            await admin.close()

    async def create_schema() -> None:  # reading commands create nothing: a runner would
        async with Client(postgres_password_dsn):
            pass

    asyncio.run(create_schema())
    asyncio.run(set_password(password))
    try:
        outputs: list[str] = []
        encoded = f"postgresql://{PASSWORD_ROLE}:{quote(password, safe='')}@{host}/{database}"
        ok = CliRunner().invoke(main, ["--database", encoded, "jobs", "ls"])
        assert ok.exit_code == 0, ok.output
        outputs.append(ok.output)
        store = PostgresJobStore(encoded)
        outputs += [store.url, repr(store), repr(Client(encoded))]

        wrong = encoded.replace(quote(password, safe=""), quote(password[::-1] + "x", safe=""))
        refused = CliRunner().invoke(main, ["--database", wrong, "jobs", "ls"])
        assert refused.exit_code == 3, refused.output
        assert len(refused.output.strip().splitlines()) == 1
        outputs.append(refused.output)

        if len(_UNREACHABLE_TRIED) < 2:  # each costs swath's 10 s of retries on open
            _UNREACHABLE_TRIED.append(password)
            down = encoded.replace(host, f"127.0.0.1:{free_port()}")
            unreachable = CliRunner().invoke(main, ["--database", down, "jobs", "ls"])
            assert unreachable.exit_code == 3, unreachable.output
            # the store's "retrying" warnings are not printed: one line
            assert len(unreachable.output.strip().splitlines()) == 1, unreachable.output
            outputs.append(unreachable.output)

        raw = f"postgresql://{PASSWORD_ROLE}:{password}@{host}/{database}"
        as_written = CliRunner().invoke(main, ["--database", raw, "jobs", "ls"])
        assert as_written.exit_code in (0, 1, 3), as_written.output
        assert len(as_written.output.strip().splitlines()) <= 1 or as_written.exit_code == 0
        outputs.append(as_written.output)
    finally:
        asyncio.run(set_password(PASSWORD))
    logged = [f"{r.getMessage()} {r.exc_text or ''} {r.args!r}" for r in caplog.records]
    assert _leaked(password, outputs + logged, context) == []
    assert _leaked(password[::-1] + "x", outputs + logged, context) == []


async def test_read_only_postgres_store(postgres_dsn: str) -> None:
    """``PostgresJobStore(dsn, read_only=True)`` on a database without swath's tables is
    NotFoundError ("no swath database at ...") and creates no table; once a writable store has
    made the schema, it reads jobs, and the server refuses its writes."""
    from swath import NotFoundError
    from tests.unit.test_task_helpers import Noop

    with pytest.raises(NotFoundError, match="no swath database at"):
        async with Client(store=PostgresJobStore(postgres_dsn, read_only=True)):
            pass
    admin = await asyncpg.connect(postgres_dsn)
    try:
        tables = await admin.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    finally:
        await admin.close()
    assert tables == []
    async with Client(postgres_dsn) as client:
        job = await client.jobs().submit("kept", Noop())
    async with Client(store=PostgresJobStore(postgres_dsn, read_only=True)) as reader:
        assert [j.id for j in await reader.jobs().query()] == [job.id]
        with pytest.raises(StoreError, match="read-only"):
            await reader.jobs().submit("refused", Noop())
