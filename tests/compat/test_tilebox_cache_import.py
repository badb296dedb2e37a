"""``swath cache import-tilebox DIR URL``: a cache directory written by Tilebox Workflows' own
``LocalFileSystemCache`` moves into a swath cache (every backend), streamed and checksummed."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from tilebox.workflows.cache import LocalFileSystemCache as TileboxLocalCache

from swath.cache import Backend, LocalFileSystemCache
from swath.cache.tilebox import import_tilebox_cache
from swath.cli import main
from tests.conformance.backends import BackendFactory

JOB = "0190d7f3-aaaa-7bbb-8ccc-000000000001"


def write_tilebox_cache(root: Path) -> dict[str, bytes]:
    """A runner cache as Tilebox writes it: job caches are groups named by job ids."""
    runner_cache = TileboxLocalCache(root)
    job_cache = runner_cache.group(JOB)
    values = {
        "fib_7": b"\x0d",
        "scene.tif": os.urandom(3 << 20) + b"tail",
        "random_numbers/key_1": b"17",
        "random_numbers/key_2": b"",
    }
    for key, value in values.items():
        job_cache[key] = value
    job_cache.group("deep").group("er")["x"] = b"nested"
    values["deep/er/x"] = b"nested"
    return {f"{JOB}/{k}": v for k, v in values.items()}


async def read_all(backend: Backend, keys: list[str]) -> dict[str, bytes]:
    return {key: await backend.get(key) for key in keys}


async def test_import_tilebox_cache_into_every_backend(
    tmp_path: Path, cache_factory: BackendFactory
) -> None:
    """Every value Tilebox wrote is readable by swath at the same key path, in its job's group,
    with the checksum of the bytes read; a second import finds them all unchanged."""
    values = write_tilebox_cache(tmp_path / "tilebox")
    async with cache_factory.make() as backend:
        prefix = f"import-{os.urandom(4).hex()}"
        where = backend.group(prefix)
        report = await import_tilebox_cache(tmp_path / "tilebox", where, chunk_size=1 << 20)
        assert report.ok
        assert sorted(report.copied) == sorted(values)
        assert report.copied_bytes == sum(len(v) for v in values.values())
        assert await read_all(where, list(values)) == values
        job_cache = where.group(JOB)
        assert sorted([k async for k in job_cache.group("random_numbers")]) == ["key_1", "key_2"]
        again = await import_tilebox_cache(tmp_path / "tilebox", where)
        assert again.copied == []
        assert sorted(again.unchanged) == sorted(values)


async def test_import_tilebox_conflicts_skips_and_move(tmp_path: Path) -> None:
    """A key holding other bytes is a conflict (kept) unless overwrite; a symbolic link and a
    path that is no valid key are skipped and reported; delete_source removes only verified
    files."""
    values = write_tilebox_cache(tmp_path / "tilebox")
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"secret")
    (tmp_path / "tilebox" / JOB / "link").symlink_to(outside)
    (tmp_path / "tilebox" / JOB / "back\\slash").write_bytes(b"x")
    async with LocalFileSystemCache(tmp_path / "swath") as cache:
        await cache.put(f"{JOB}/fib_7", b"other")
        report = await import_tilebox_cache(tmp_path / "tilebox", cache)
        assert report.conflicts == [f"{JOB}/fib_7"]
        assert await cache.get(f"{JOB}/fib_7") == b"other"
        assert [rel for rel, _ in report.skipped] == [f"{JOB}/back\\slash", f"{JOB}/link"]
        assert not await cache.contains(f"{JOB}/link")
        assert not report.ok

        moved = await import_tilebox_cache(
            tmp_path / "tilebox", cache, overwrite=True, delete_source=True
        )
        assert moved.copied == [f"{JOB}/fib_7"]
        assert await read_all(cache, list(values)) == values
    assert outside.read_bytes() == b"secret"
    left = sorted(p.name for p in (tmp_path / "tilebox").rglob("*") if not p.is_dir())
    assert left == ["back\\slash", "link"]


def test_cli_import_tilebox(tmp_path: Path) -> None:
    """The command copies a Tilebox cache into a swath cache URL and says how much; it exits 1
    when something was skipped."""
    values = write_tilebox_cache(tmp_path / "tilebox")
    url = f"file://{tmp_path / 'swath'}"
    result = CliRunner().invoke(main, ["cache", "import-tilebox", str(tmp_path / "tilebox"), url])
    assert result.exit_code == 0, result.output
    assert f"copied {len(values)} values" in result.output

    async def check() -> dict[str, bytes]:
        async with LocalFileSystemCache(tmp_path / "swath") as cache:
            return await read_all(cache, list(values))

    assert asyncio.run(check()) == values
    (tmp_path / "tilebox" / "bad\\name").write_bytes(b"x")
    result = CliRunner().invoke(main, ["cache", "import-tilebox", str(tmp_path / "tilebox"), url])
    assert result.exit_code == 1
    assert "skipped 'bad\\\\name'" in result.output


@pytest.mark.parametrize("missing", ["nope"])
async def test_import_tilebox_missing_directory(tmp_path: Path, missing: str) -> None:
    """A directory that does not exist is a clear error before anything is written."""
    async with LocalFileSystemCache(tmp_path / "swath") as cache:
        with pytest.raises(NotADirectoryError):
            await import_tilebox_cache(tmp_path / missing, cache)
