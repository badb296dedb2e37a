"""Every code block of README.md and docs/**/*.md does what the page says it does: Python blocks
run, each page's in order in a fresh directory and interpreter, as a newcomer pastes them; shell
blocks of ``swath`` commands run; configuration blocks parse (tests/docs/blocks.py has the rules
and the skip markers)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.docs.blocks import (
    EXCLUDED_PAGES,
    RUN_PYTHON,
    RUN_SHELL,
    Block,
    Page,
    pages,
    parse,
)

HARNESS = Path(__file__).with_name("harness.py")
PAGES = {p.path: p for p in map(parse, pages())}
RUNNABLE = sorted(
    path
    for path, page in PAGES.items()
    if path not in EXCLUDED_PAGES
    and any(
        b.language in RUN_PYTHON | RUN_SHELL and b.skip is None and not b.title for b in page.blocks
    )
)

#: The environment a reader's shell has: no swath settings of the developer's, this checkout's
#: ``swath`` first on PATH, and no AWS profile or endpoint that could leak in.
CLEARED = (
    "SWATH_DATABASE_URL",
    "SWATH_CACHE_URL",
    "AWS_PROFILE",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "STORAGE_EMULATOR_HOST",
    "PYTHONPATH",
)


def steps(page: Page) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for b in page.blocks:
        if b.skip is not None or (b.language not in RUN_PYTHON | RUN_SHELL and not b.title):
            continue
        kind = "file" if b.title else "python" if b.language in RUN_PYTHON else "shell"
        if b.background:
            kind = "background"
        out.append(
            {
                "kind": kind,
                "page": b.page,
                "line": b.line,
                "where": b.where,
                "code": b.code,
                "title": b.title,
                "timeout": 180,
            }
        )
    return out


@pytest.fixture
def services_env(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """The environment that points a page's code at the test suite's real servers (the page's
    ``services`` directive): buckets named ``my-bucket``, a fresh PostgreSQL database."""
    page: Page = PAGES[request.node.callspec.params["path"]]
    env: dict[str, str] = {}
    cleanups = []
    if "s3" in page.services:
        server = request.getfixturevalue("moto_s3")
        env |= server.env
        env |= {"AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull}
        server.client.create_bucket(Bucket="my-bucket")
        cleanups.append(lambda: server.drop_bucket("my-bucket"))
    if "gcs" in page.services:
        gcs = request.getfixturevalue("gcs_server")
        env["STORAGE_EMULATOR_HOST"] = gcs.endpoint
        if "my-bucket" not in {
            b["name"] for b in gcs.request("GET", "/storage/v1/b?project=test").get("items", [])
        }:
            gcs.create_bucket("my-bucket")
        cleanups.append(lambda: gcs.empty_bucket("my-bucket"))
    if "postgres" in page.services:
        env["SWATH_DATABASE_URL"] = request.getfixturevalue("postgres_dsn")
    yield env
    for cleanup in cleanups:
        cleanup()


def run_page(
    page: Page, directory: Path, services: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """Run the page's blocks in ``directory`` through the harness, in a fresh interpreter."""
    (directory / "steps.json").write_text(json.dumps(steps(page)))
    env = {k: v for k, v in os.environ.items() if k not in CLEARED}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env |= services
    return subprocess.run(
        [sys.executable, str(HARNESS), "steps.json"],
        cwd=directory,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@pytest.fixture(scope="session")
def started(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Future[Any]]]:
    """The pages that need no server, started together on a few threads when the first of them
    is tested (most of a page's time is waiting for its processes), so the docs add little to
    the suite's time; each page still runs alone in its own directory and interpreter."""
    with ThreadPoolExecutor(4) as pool:
        yield {
            path: pool.submit(run_page, PAGES[path], tmp_path_factory.mktemp("page"), {})
            for path in RUNNABLE
            if not PAGES[path].services
        }


@pytest.mark.parametrize("path", RUNNABLE)
def test_page_runs(
    path: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    """The page's Python and shell blocks run in order without an error, in a fresh directory,
    on the embedded defaults or on the real servers its services directive names."""
    page = PAGES[path]
    if page.services:
        result = run_page(page, tmp_path, request.getfixturevalue("services_env"))
    else:
        result = request.getfixturevalue("started")[path].result()
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"


def test_blocks_are_tagged_and_directives_known() -> None:
    """Every block names its language, every skip says why, every directive is known: a block
    the tests would not run cannot slip in unnoticed."""
    errors = [e for page in PAGES.values() if page.path not in EXCLUDED_PAGES for e in page.errors]
    assert not errors, "\n".join(errors)


def test_configuration_blocks_parse() -> None:
    """YAML, JSON and TOML blocks parse; systemd units (ini) carry no inline comment, which
    systemd would keep as part of the value (an EnvironmentFile= path with '# ...' after it)."""
    problems: list[str] = []
    for page in PAGES.values():
        for b in page.blocks:
            problems += check_config(b)
    assert not problems, "\n".join(problems)


def check_config(b: Block) -> list[str]:
    try:
        if b.language == "yaml":
            yaml.safe_load(b.code)
        elif b.language == "json":
            json.loads(b.code)
        elif b.language == "toml":
            tomllib.loads(b.code)
    except Exception as exc:
        return [f"{b.where}: {b.language} does not parse: {exc}"]
    if b.language == "ini":
        return [
            f"{b.where}+{n + 1}: inline comment in a systemd line: {line.strip()!r}"
            for n, line in enumerate(b.code.splitlines())
            if "=" in line and " #" in line.partition("=")[2]
        ]
    return []


def test_the_collector_catches_what_it_promises(tmp_path: Path) -> None:
    """The rules bite: an untagged block, a skip without a reason and an inline systemd comment
    are reported; a skipped block and a file block are not executed."""
    md = tmp_path / "probe.md"
    md.write_text(
        "```\nuntagged\n```\n\n<!-- docs-test: skip -->\n```python\nraise SystemExit(1)\n```\n\n"
        "<!-- docs-test: skip needs a GPU -->\n```python\nraise SystemExit(1)\n```\n\n"
        '```python title="pkg/tasks.py"\nraise SystemExit(1)\n```\n\n'
        "```ini\n[Service]\nEnvironmentFile=/etc/x   # secrets\n```\n"
    )
    page = parse(md)
    assert any("language ''" in e for e in page.errors)
    assert any("must say why" in e for e in page.errors)
    assert [b.skip for b in page.blocks[1:3]] == ["", "needs a GPU"]
    assert [s["kind"] for s in steps(page)] == ["file"]
    assert check_config(page.blocks[-1])
