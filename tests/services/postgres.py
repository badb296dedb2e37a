"""A throwaway PostgreSQL cluster for the tests (and the benchmarks).

``initdb`` and ``pg_ctl`` come from the installed PostgreSQL (``/usr/lib/postgresql/*/bin``, the
newest); ``.ci/run`` installs the ``postgresql`` Debian package when they are missing. As root,
every server command runs as the ``postgres`` user through ``runuser`` (``initdb`` refuses root),
with the data and socket directories owned by it and every parent traversable. The server listens
on a free 127.0.0.1 port, runs with ``fsync=off`` and logs to ``<root>/postgres.log``. If it cannot
start, the fixture raises with the log's tail: tests fail, never skip.

Fixtures:

- ``postgres_cluster`` (session): the running :class:`PostgresCluster`; ``restart()`` wraps
  ``pg_ctl restart``.
- ``postgres_dsn`` (function): a DSN to a fresh database of its own, so tests never see each
  other's jobs.
- ``postgres_password_dsn`` (function): like ``postgres_dsn`` but as a role that must
  authenticate with a password (scram-sha-256), to prove passwords never leak.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from tests.services.process import free_port

#: the role that must log in with a password (see ``postgres_password_dsn``)
PASSWORD_ROLE = "swath_pw"
PASSWORD = "s3cr3t-Pa55word-never-logged"


def pg_bin_dir() -> Path:
    """The newest installed PostgreSQL's ``bin`` directory; raises if none is installed."""
    candidates = [
        Path(p) for p in glob.glob("/usr/lib/postgresql/*/bin") if Path(p, "initdb").exists()
    ]
    if not candidates:
        found = shutil.which("initdb")
        if found:
            return Path(found).parent
        raise RuntimeError(
            "PostgreSQL server binaries not found (no /usr/lib/postgresql/*/bin/initdb): "
            "install them with `apt-get install -y postgresql` (.ci/run does this)"
        )

    def version(p: Path) -> tuple[int, ...]:
        return tuple(int(x) for x in re.findall(r"\d+", p.parent.name)) or (0,)

    return max(candidates, key=version)


class PostgresCluster:
    """One throwaway PostgreSQL cluster under ``root``: ``start``, ``stop``, ``restart``,
    ``create_database``. Usable outside pytest (the benchmarks use it)."""

    def __init__(self, root: Path | None = None, port: int | None = None) -> None:
        self.bin = pg_bin_dir()
        digits = re.findall(r"\d+", self.bin.parent.name)
        self.major = int(digits[0]) if digits else 0
        self.root = Path(root) if root else Path(tempfile.mkdtemp(prefix="swath-pg-"))
        self.data = self.root / "data"
        self.sock = self.root / "sock"
        self.log = self.root / "postgres.log"
        self.port = port or free_port()
        self._as_postgres = os.geteuid() == 0
        self._prepare_dirs()
        self._initdb()

    # -- helpers -----------------------------------------------------------------------------

    def _argv(self, tool: str, *args: str) -> list[str]:
        cmd = [str(self.bin / tool), *args]
        return ["runuser", "-u", "postgres", "--", *cmd] if self._as_postgres else cmd

    def _run(self, argv: Sequence[str], timeout: float = 60.0) -> None:
        """Run a server command with its output appended to the log (never an unread pipe)."""
        with open(self.log, "ab") as out:
            out.write(f"\n$ {' '.join(argv)}\n".encode())
            out.flush()
            proc = subprocess.run(
                list(argv),
                cwd=self.root,  # the postgres user may not be allowed into the caller's folder
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                check=False,
            )
        if proc.returncode != 0:
            raise RuntimeError(
                f"PostgreSQL command failed ({' '.join(argv)}, exit {proc.returncode}); "
                f"the log:\n{self.log_tail()}"
            )

    def _prepare_dirs(self) -> None:
        self.data.mkdir(parents=True, exist_ok=True)
        self.sock.mkdir(parents=True, exist_ok=True)
        self.log.touch()
        if self._as_postgres:
            try:
                pg = pwd.getpwnam("postgres")
            except KeyError:
                raise RuntimeError(
                    "running as root, the PostgreSQL server must run as the 'postgres' user, "
                    "which does not exist: install the postgresql package (.ci/run does)"
                ) from None
            for path in (self.root, self.data, self.sock, self.log):
                os.chown(path, pg.pw_uid, pg.pw_gid)
            self.data.chmod(0o700)
            # every parent must be traversable by postgres (mkdtemp makes 0700 folders)
            for parent in self.root.resolve().parents:
                mode = parent.stat().st_mode
                if not mode & 0o001:
                    parent.chmod(mode | 0o001)

    def _initdb(self) -> None:
        self._run(
            self._argv(
                "initdb",
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "-N",
            )
        )
        # one role must authenticate with a password; everyone else is trusted
        hba = self.data / "pg_hba.conf"
        rules = (
            f"host all {PASSWORD_ROLE} 127.0.0.1/32 scram-sha-256\n"
            "local all all trust\n"
            "host all all 127.0.0.1/32 trust\n"
            "host all all ::1/128 trust\n"
        )
        hba.write_text(rules)

    def _options(self) -> str:
        return " ".join(
            [
                f"-p {self.port}",
                f"-k {self.sock}",
                "-c listen_addresses=127.0.0.1",
                "-c fsync=off",
                "-c synchronous_commit=off",
                "-c full_page_writes=off",
                "-c max_connections=300",
                "-c shared_buffers=128MB",
            ]
        )

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return "(no log)"

    # -- lifecycle ---------------------------------------------------------------------------

    def _pg_ctl_up(self, action: str, *extra: str) -> None:
        """``pg_ctl start`` or ``restart`` with this cluster's log and server options."""
        self._run(
            self._argv(
                "pg_ctl", "-D", str(self.data), "-l", str(self.log), *extra,
                "-w", "-t", "30", "-o", self._options(), action,
            )
        )  # fmt: skip

    def start(self) -> None:
        self._pg_ctl_up("start")

    def stop(self, mode: str = "fast") -> None:
        if not (self.data / "postmaster.pid").exists():
            return
        try:
            self._run(
                self._argv("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop")
            )
        except (RuntimeError, subprocess.TimeoutExpired):
            self._kill_postmaster()

    def restart(self, down_for: float = 0.0) -> None:
        """``pg_ctl restart -m fast``: every client connection is cut. With ``down_for``, stop,
        stay down that many seconds, then start (clients must retry while it is down)."""
        if down_for > 0:
            self.stop()
            time.sleep(down_for)
            self.start()
            return
        self._pg_ctl_up("restart", "-m", "fast")

    def _kill_postmaster(self) -> None:
        """Last resort: SIGKILL the postmaster by the process id in ``postmaster.pid``."""
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int((self.data / "postmaster.pid").read_text().split()[0])
            os.kill(pid, 9)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    # -- databases ---------------------------------------------------------------------------

    def dsn(self, database: str = "postgres", user: str = "postgres", password: str = "") -> str:
        auth = f"{user}:{password}" if password else user
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{database}"

    def psql(self, sql: str, database: str = "postgres") -> None:
        """Run one SQL command as the superuser over the Unix socket."""
        self._run(
            self._argv(
                "psql",
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                str(self.sock),
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-d",
                database,
                "-c",
                sql,
            )
        )

    def create_database(self, name: str | None = None, owner: str = "postgres") -> str:
        """A fresh database; returns its name."""
        name = name or f"t_{uuid.uuid4().hex[:16]}"
        # FILE_COPY (PostgreSQL 15+) copies the template's files: 0.1 s instead of 0.8 s
        strategy = " STRATEGY = FILE_COPY" if self.major >= 15 else ""
        self.psql(f'CREATE DATABASE "{name}" OWNER "{owner}"{strategy}')
        return name

    def drop_database(self, name: str) -> None:
        with contextlib.suppress(RuntimeError):
            self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def ensure_password_role(self) -> None:
        self.psql(
            "DO $$ BEGIN "
            f"IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{PASSWORD_ROLE}') THEN "
            f"CREATE ROLE {PASSWORD_ROLE} LOGIN PASSWORD '{PASSWORD}'; END IF; END $$"
        )


def reap_orphans() -> None:
    """Stop and delete throwaway clusters whose creating process is gone (a test run that was
    killed leaves its server running: pg_ctl daemonizes it). Clusters of live processes, such
    as another test run's, are left alone."""
    for owner in glob.glob(os.path.join(tempfile.gettempdir(), "swath-pg-*", "owner.pid")):
        root = Path(owner).parent
        try:
            pid = int(Path(owner).read_text())
            os.kill(pid, 0)
            continue  # still alive
        except ProcessLookupError:
            pass
        except (OSError, ValueError):
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            postmaster = int((root / "data" / "postmaster.pid").read_text().split()[0])
            os.kill(postmaster, signal.SIGQUIT)  # immediate shutdown, as pg_ctl -m immediate
            for _ in range(100):
                os.kill(postmaster, 0)  # raises once it is gone
                time.sleep(0.05)
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def running_cluster() -> Iterator[PostgresCluster]:
    """Start a throwaway cluster, yield it, stop and delete it (for scripts and fixtures)."""
    reap_orphans()
    cluster = PostgresCluster()
    (cluster.root / "owner.pid").write_text(str(os.getpid()))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.cleanup()


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """The session's throwaway PostgreSQL cluster (fails the tests if it cannot start)."""
    with running_cluster() as cluster:
        yield cluster


@pytest.fixture
def postgres_dsn(postgres_cluster: PostgresCluster) -> Iterator[str]:
    """A DSN to a fresh, empty database for this test alone."""
    name = postgres_cluster.create_database()
    yield postgres_cluster.dsn(name)
    postgres_cluster.drop_database(name)


@pytest.fixture
def postgres_password_dsn(postgres_cluster: PostgresCluster) -> Iterator[str]:
    """A DSN, with a password in it, to a fresh database owned by a role that must send it."""
    postgres_cluster.ensure_password_role()
    name = postgres_cluster.create_database(owner=PASSWORD_ROLE)
    yield postgres_cluster.dsn(name, user=PASSWORD_ROLE, password=PASSWORD)
    postgres_cluster.drop_database(name)
