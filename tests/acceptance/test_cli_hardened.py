"""The ``swath`` command at its edges: every error one line and a documented exit code, reading
commands that create nothing, read-only databases that can still be read, user text that cannot
reach the terminal or the Mermaid graph raw, and a reader that goes away (``| head``)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from swath import Client, ExecutionContext, LocalFileSystemCache, Task
from swath.cli import main

SWATH = [sys.executable, "-c", "from swath.cli import main; main()"]
#: the exit codes docs/cli.md documents
DOCUMENTED = {0, 1, 2, 3, 70, 130, 141}
#: what a terminal must never get from user text: C0 controls but newline, DEL, C1 controls
CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


class Root(Task):
    async def execute(self, context: ExecutionContext) -> None:
        context.submit_subtasks([Fails()])


class Fails(Task):
    display: str = "leaf"
    message: str = "boom"

    async def execute(self, context: ExecutionContext) -> None:
        context.current_task.display = self.display
        raise RuntimeError(self.message)


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``root`` with its size and mtime: what "writes nothing" compares.

    SQLite's ``-wal`` and ``-shm`` companions of a database in WAL mode are left out: they are
    its readers' shared memory, which a reader creates (if the directory lets it) and marks,
    and they hold no data (docs/security.md)."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            if name.endswith(("-wal", "-shm")):
                continue
            path = os.path.join(dirpath, name)
            st_ = os.lstat(path)
            if name in dirnames:  # its entries are compared; its mtime moves with the -shm
                found[os.path.relpath(path, root) + "/"] = (0, 0)
            else:
                found[os.path.relpath(path, root)] = (st_.st_size, st_.st_mtime_ns)
    return found


def one_error_line(result: Result) -> str:
    """The one line a failed command printed (click's usage errors add their usage text)."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    if result.exit_code != 2:
        assert lines == errors, result.stderr
    assert "Traceback" not in result.output + result.stderr
    return errors[0]


async def failed_job(db: str, name: str, display: str, message: str) -> str:
    async with Client(db) as client:
        job = await client.jobs().submit(name, Root())
        runner = client.runner([Root, Fails], LocalFileSystemCache(db + ".cache"))
        await runner.run_all()
        return job.id


@contextlib.contextmanager
def immutable(*paths: Path) -> Iterator[None]:
    """``chattr -R +i``: not even root may write, create or delete there (the tests run as root,
    for whom chmod means nothing)."""
    subprocess.run(["chattr", "-R", "+i", *map(str, paths)], check=True)
    try:
        yield
    finally:
        subprocess.run(["chattr", "-R", "-i", *map(str, paths)], check=True)


# -- item 7: one line, a documented exit code, --debug for the traceback ---------------------------
def test_corrupt_unreadable_and_read_only_databases_are_one_line(tmp_path: Path) -> None:
    """A file that is not a database, a directory given as the database and a database that
    cannot be written (for a writing command) each give one ``Error:`` line and exit code 3
    (old code: a 60-line traceback); ``--debug`` shows the traceback."""
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"this is not a database" * 100)
    for args in (["jobs", "ls"], ["jobs", "show", "x"], ["jobs", "cancel", "x"]):
        result = invoke("--database", str(bad), *args)
        assert result.exit_code == 3, result.output
        assert "not a database" in one_error_line(result)
    result = invoke("--database", str(tmp_path), "jobs", "ls")
    assert result.exit_code == 3
    one_error_line(result)

    db = tmp_path / "ok" / "jobs.db"
    job_id = asyncio.run(failed_job(str(db), "j", "d", "m"))
    with immutable(db, db.parent):
        result = invoke("--database", str(db), "jobs", "retry", job_id)
        assert result.exit_code == 3, result.output
        assert "read" in one_error_line(result)

    debug = subprocess.run(
        [*SWATH, "--debug", "--database", str(bad), "jobs", "ls"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert debug.returncode != 0
    assert "Traceback" in debug.stderr
    assert "not a database" in debug.stderr


# -- item 8: reading commands create nothing -------------------------------------------------------
READING = [
    ["jobs", "ls"],
    ["jobs", "show", "some-id"],
    ["jobs", "watch", "some-id"],
    ["jobs", "diagram", "some-id"],
    ["jobs", "cancel", "some-id"],
    ["jobs", "retry", "some-id"],
    ["clusters", "ls"],
    ["clusters", "rm", "gpu"],
]


def test_reading_commands_create_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a database and a cache that do not exist, every jobs command, ``cache ls/du/cat/rm``
    and ``cache gc`` (with and without --dry-run) say "no database at ..." or "no cache at ..."
    (exit code 3) and leave the filesystem as it was (old code created the directories and an
    empty database, or the cache directory)."""
    monkeypatch.chdir(tmp_path)
    asyncio.run(failed_job("real.db", "real", "d", "m"))
    before = snapshot(tmp_path)
    db = "nonexist/sub/new.db"
    for args in READING:
        result = invoke("--database", db, *args)
        assert result.exit_code == 3, (args, result.output)
        assert f"no database at {db}" in one_error_line(result)
    for args in (
        ["cache", "ls", "./typo/deeper"],
        ["cache", "du", "./typo/deeper"],
        ["cache", "cat", "./typo/deeper", "k"],
        ["cache", "rm", "./typo/deeper", "k"],
        ["cache", "rm", "-r", "./typo/deeper", "g"],
    ):
        result = invoke("--database", db, *args)
        assert result.exit_code == 3, (args, result.output)
        assert "no cache at" in one_error_line(result)
    for args in (["cache", "gc", "./typo/deeper", "--dry-run"], ["cache", "gc", "./typo"]):
        result = invoke("--database", db, *args)
        assert result.exit_code == 3, (args, result.output)
        assert "no database at" in one_error_line(result)
    for args in (["cache", "gc", "./typo"], ["cache", "gc", "./typo", "--dry-run"]):
        result = invoke("--database", "real.db", *args)
        assert result.exit_code == 3, (args, result.output)
        assert "no cache at" in one_error_line(result)
    assert snapshot(tmp_path) == before


def test_read_only_database_and_cache_can_be_read(tmp_path: Path) -> None:
    """A database whose file and directory cannot be written (chattr +i, so even for root) is
    read by jobs ls/show/watch/diagram and a read-only cache by cache ls/du/cat/gc --dry-run;
    nothing changes on disk (old code: "attempt to write a readonly database" or "unable to
    open")."""
    db = tmp_path / "ro" / "jobs.db"
    job_id = asyncio.run(failed_job(str(db), "read-me", "d", "m"))
    cache = tmp_path / "ro" / "jobs.db.cache"

    async def put() -> None:
        async with LocalFileSystemCache(cache) as c:
            await c.group(job_id).put("k", b"value")

    asyncio.run(put())
    assert sorted(p.name for p in db.parent.iterdir()) == ["jobs.db", "jobs.db.cache"]
    before = snapshot(tmp_path)
    with immutable(db.parent):
        for args in (["jobs", "ls"], ["jobs", "show", job_id], ["jobs", "diagram", job_id]):
            result = invoke("--database", str(db), *args)
            assert result.exit_code == 0, (args, result.output)
        assert "read-me" in invoke("--database", str(db), "jobs", "ls").output
        watched = invoke("--database", str(db), "jobs", "watch", job_id)
        assert watched.exit_code == 1  # it ended FAILED, and watch says so
        assert "FAILED" in watched.output
        assert invoke("cache", "ls", str(cache)).output.split() == [f"{job_id}/"]
        assert invoke("cache", "cat", str(cache), f"{job_id}/k").output == "value"
        assert invoke("cache", "du", str(cache)).exit_code == 0
        gc = invoke("--database", str(db), "cache", "gc", str(cache), "--dry-run", "--failed")
        assert f"would remove {job_id}" in gc.output, gc.output
    assert snapshot(tmp_path) == before


# -- item 9: terminal and Mermaid injection --------------------------------------------------------
def test_user_text_is_escaped_on_the_terminal_and_in_mermaid(tmp_path: Path) -> None:
    """A job named ``\\x1b]0;title\\x07`` (an OSC that retitles a terminal), a display and an
    error message full of escape sequences: jobs ls/show and cache gc print them escaped (old
    code: ESC reached the terminal); the Mermaid diagram keeps one line per node and edge, so
    a display cannot add nodes or edges (old code: a newline in a display started a line)."""
    db = str(tmp_path / "jobs.db")
    evil_display = 'x"]\n    t9["injected"]\n    t0 --> t9\n%%\x1b[2J'

    job_id = asyncio.run(failed_job(db, "\x1b]0;title\x07", "d", "m"))
    # the failed leaf's display and error as a task could have set them (the store keeps
    # what tasks give it; only the CLI must not print it raw)
    import sqlite3

    with sqlite3.connect(db) as conn:
        conn.execute(
            "UPDATE tasks SET display = ?, error_message = ? WHERE parent_id IS NOT NULL",
            (evil_display, "bad \x1b[31mred\x9b\x07 \u202eevil"),
        )
    conn.close()
    for args in (["jobs", "ls"], ["jobs", "show", job_id]):
        result = invoke("--database", db, *args)
        assert result.exit_code == 0, result.output
        assert not CONTROL.search(result.output), repr(result.output)
        assert "\\x1b]0;title\\x07" in result.output
    shown = invoke("--database", db, "jobs", "show", job_id).output
    assert "\\x1b[31mred" in shown
    diagram = invoke("--database", db, "jobs", "diagram", job_id).output
    lines = diagram.splitlines()
    assert lines[0] == "graph TD"
    nodes = [line for line in lines if re.match(r"\s+t\d+\[", line)]
    edges = [line for line in lines if "-->" in line or "-.->" in line]
    assert len(nodes) == 2
    assert edges == ["    t0 --> t1"]
    for node in nodes:
        assert re.fullmatch(r'    t\d+\["[^"\n]*"\]:::\w+', node), node
    assert "injected" in diagram  # shown, as text inside the label
    assert not CONTROL.search(diagram)


# -- item 11: a reader that goes away --------------------------------------------------------------
def test_cache_cat_into_head_exits_quietly(tmp_path: Path) -> None:
    """``swath cache cat URL KEY | head -c 10`` on a 32 MiB value: head gets its 10 bytes,
    swath prints nothing on stderr and exits 141 like cat killed by SIGPIPE (old code:
    "Error: [Errno 32] Broken pipe")."""
    cache = tmp_path / "cache"

    async def put() -> None:
        async with LocalFileSystemCache(cache) as c:
            await c.put("big", os.urandom(1 << 20) * 32)

    asyncio.run(put())
    cat = subprocess.Popen(
        [*SWATH, "cache", "cat", str(cache), "big"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert cat.stdout is not None
    assert len(cat.stdout.read(10)) == 10
    cat.stdout.close()
    _, err = cat.communicate(timeout=120)
    assert err == b""
    assert cat.returncode == 141


# -- item 13: a failed job's root is not "running" -------------------------------------------------
def test_failed_job_shows_no_running_task(tmp_path: Path) -> None:
    """``jobs show`` of a job whose subtask failed shows its COMPUTED root as not completed and
    with no duration, not "COMPUTED running" (old code)."""
    db = str(tmp_path / "jobs.db")
    job_id = asyncio.run(failed_job(db, "fails", "d", "m"))
    shown = invoke("--database", db, "jobs", "show", job_id, "--no-tracebacks").output
    assert "FAILED" in shown
    assert "running" not in shown
    assert "COMPUTED (its subtasks did not complete)" in shown


# -- hypothesis over arguments ---------------------------------------------------------------------
ANY_TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=30)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    command=st.sampled_from(
        [
            ["jobs", "show", "{a}"],
            ["jobs", "diagram", "{a}"],
            ["jobs", "cancel", "{a}"],
            ["jobs", "ls", "--name", "{a}"],
            ["jobs", "ls", "--limit", "{a}"],
            ["jobs", "ls", "--state", "{a}"],
            ["cache", "ls", "{cache}", "{a}"],
            ["cache", "du", "{cache}", "{a}"],
            ["cache", "cat", "{cache}", "{a}"],
            ["cache", "rm", "{cache}", "{a}"],
            ["cache", "ls", "{a}"],
            ["cache", "cat", "{a}", "k"],
            ["--database", "{a}", "jobs", "ls"],
            ["--database", "{a}", "cache", "gc", "{cache}", "--dry-run"],
        ]
    ),
    arg=ANY_TEXT,
)
def test_any_argument_gives_output_or_one_line_and_writes_nothing(
    tmp_path: Path, command: list[str], arg: str
) -> None:
    """Any text as a job id, name, limit, state, key, group, cache URL or database URL: the
    command either succeeds or fails with one ``Error:`` line and a documented exit code,
    prints no control character, and leaves the filesystem (a database with one failed job and
    a cache with one value, and the working directory) unchanged."""
    root = tmp_path / "fixed"
    db = root / "jobs.db"
    cache = root / "cache"
    if not db.exists():
        asyncio.run(failed_job(str(db), "fixed", "d", "m"))

        async def put() -> None:
            async with LocalFileSystemCache(cache) as c:
                await c.put("g/k", b"v")

        asyncio.run(put())
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    before = snapshot(tmp_path)
    args = [part.replace("{a}", arg).replace("{cache}", str(cache)) for part in command]
    if args[0] != "--database":
        args = ["--database", str(db), *args]
    cwd = os.getcwd()
    os.chdir(work)
    try:
        result = CliRunner().invoke(main, args)
    finally:
        os.chdir(cwd)
    assert result.exit_code in DOCUMENTED, (args, result.output, result.exception)
    assert result.exit_code != 70, (args, result.output)  # no internal error for any input
    if result.exit_code:
        one_error_line(result)
    assert not CONTROL.search(result.output), (args, result.output)
    if "cancel" not in args and "rm" not in args:
        assert snapshot(tmp_path) == before, args
    else:  # a writing command with an id or key that is not there changes nothing either
        assert set(snapshot(tmp_path)) == set(before), args


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    key=st.lists(
        st.text(
            st.characters(codec="utf-8", exclude_characters="/\x00"), min_size=1, max_size=12
        ).filter(lambda s: s not in (".", "..")),
        min_size=1,
        max_size=3,
    ),
    value=st.binary(max_size=200),
)
def test_valid_keys_round_trip_through_the_cli(
    tmp_path: Path, key: list[str], value: bytes
) -> None:
    """A value stored under any valid key (any characters, escapes included) comes back whole
    from ``cache cat``, and ``cache ls`` lists the key's last segment in its escaped form."""
    from swath.cli._common import clean
    from swath.errors import InvalidKeyError

    cache = tmp_path / "cache"
    name = "/".join(key)

    async def put() -> bool:
        async with LocalFileSystemCache(cache) as c:
            try:
                await c.put(name, value)
            except InvalidKeyError:
                return False
            return True

    if not asyncio.run(put()):
        return
    # "--": a key may begin with "-" (as for cat, the command line's own rule)
    out = CliRunner().invoke(main, ["cache", "cat", "--", str(cache), name])
    assert out.exit_code == 0, out.output
    assert out.stdout_bytes == value
    group = "/".join(key[:-1])
    listed = CliRunner().invoke(main, ["cache", "ls", "--", str(cache), group])
    assert listed.exit_code == 0, listed.output
    assert clean(key[-1]) in listed.output.splitlines()
    asyncio.run(_clear(cache))


async def _clear(cache: Path) -> None:
    async with LocalFileSystemCache(cache) as c:
        await c.clear()


# -- found by the hypothesis tests above, and by trying their neighbours -------------------------
@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        # old code: OverflowError from SQLite, a traceback
        (["jobs", "ls", "--limit", "99999999999999999999"], 2, "--limit"),
        # old code: a negative LIMIT is no limit in SQLite
        (["jobs", "ls", "--limit", "-5"], 2, "--limit"),
        # old code: NaN, infinite or negative intervals, leases and grace periods accepted
        (["jobs", "watch", "x", "--interval", "nan"], 2, "finite"),
        (["jobs", "watch", "x", "--interval", "-1"], 2, "finite"),
        (["runner", "swath.cli", "--lease", "inf", "--until-idle"], 2, "finite"),
        (["runner", "swath.cli", "--grace", "-1", "--until-idle"], 2, "finite"),
        # old code: asyncpg's int() quoted whatever stood where the port goes (with a '#' in a
        # password, part of the password): "invalid literal for int() with base 10: 'port'"
        (["--database", "postgresql://h:S3cretPort/d", "jobs", "ls"], 1, "port"),
        (["--database", "postgresql://u:pw@[::1/d", "jobs", "ls"], 1, "IPv6"),
    ],
)
def test_numbers_and_ports_are_checked_before_use(
    tmp_path: Path, args: list[str], code: int, says: str
) -> None:
    """Options and URL parts that reached SQLite, the runner or asyncpg unchecked are refused
    up front in one line, quoting no secret."""
    if args[0] != "--database":
        args = ["--database", str(tmp_path / "none.db"), *args]
    result = invoke(*args)
    assert result.exit_code == code, result.output
    assert says in one_error_line(result)
    assert "S3cret" not in result.output
    assert list(tmp_path.iterdir()) == []


def test_more_edges_found_next_to_the_listed_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A task module that raises while importing (not an ImportError) is a usage error naming
    it, exit code 2 (old code: a traceback; before the one-line rule: "internal error"); a
    demo scene of 10^20 pixels is refused up front (old code: hung computing its tiles); a
    database whose schema is older than this swath's is exit code 3 for reading commands,
    saying that a runner upgrades it."""
    (tmp_path / "raises_at_import.py").write_text("raise RuntimeError('no config file')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    db = str(tmp_path / "jobs.db")
    result = invoke("--database", db, "runner", "raises_at_import", "--until-idle")
    assert result.exit_code == 2, result.output
    assert "RuntimeError: no config file" in one_error_line(result)

    result = invoke("demo", "--size", "99999999999999999999", "--tile", "1")
    assert result.exit_code == 2, result.output
    assert "--size" in one_error_line(result)

    asyncio.run(failed_job(db, "old", "d", "m"))
    import sqlite3

    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("UPDATE swath_schema SET version = 1")
    result = invoke("--database", db, "jobs", "ls")
    assert result.exit_code == 3, result.output
    assert "older than this swath" in one_error_line(result)


def test_runner_log_lines_are_escaped(tmp_path: Path) -> None:
    """``swath runner`` logs a failed task's error (user text) with its control characters
    escaped (old code: the runner's log line carried the escape sequence to the terminal)."""
    db = str(tmp_path / "jobs.db")

    async def submit() -> None:
        async with Client(db) as client:
            await client.jobs().submit("j", Fails(message="bad \x1b]0;pwned\x07 \x1b[2J"))

    asyncio.run(submit())
    module = "tests.acceptance.test_cli_hardened"
    cache = str(tmp_path / "cache")
    ran = subprocess.run(
        [*SWATH, "--database", db, "runner", module, "--cache", cache, "--until-idle"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert ran.returncode == 0, ran.stderr
    assert "1 failed" in ran.stdout
    assert "bad \\x1b]0;pwned\\x07" in ran.stderr
    assert not CONTROL.search(ran.stdout + ran.stderr)
