"""The code blocks of README.md and docs/**/*.md, as a reader sees them, and what the docs tests
do with each (tests/docs/test_examples.py).

A fenced block's first word is its language:

- ``python``: executed, each page's blocks in order in one interpreter and one module namespace,
  in a fresh temporary directory, as a newcomer pastes them;
- any block with a title (``python title="pkg/mod.py"``, ``ini title="pytest.ini"``) is a file
  the reader saves under that name: written there, in its place in the page's order;
- ``bash``, ``sh``, ``shell``: run with ``bash -euo pipefail`` in the same directory, ``swath``
  being this checkout's command; ``$JOB_ID`` is the id of the newest job in the page's job
  store (the id an earlier example printed);
- ``ini`` (systemd units): no line may carry an inline ``#`` comment (systemd keeps it as part
  of the value); ``yaml`` and ``json``: parsed; ``toml``: parsed;
- ``text``, ``mermaid``, ``console``: shown only (diagrams, output, synopses).

A block without a language is an error: every block says what it is.

Directives are HTML comments, invisible on the site:

- ``<!-- docs-test: skip REASON -->`` right before a block: not run (the reason is required);
- ``<!-- docs-test: background -->`` right before a shell block: started in the background
  (a runner that serves the rest of the page) and stopped with SIGTERM when the page is done;
  it must then exit 0 (a graceful stop);
- ``<!-- docs-test: services s3 gcs postgres -->`` anywhere in a page: the page runs against
  the test suite's real servers, reached the way the docs tell users to reach theirs: S3
  through ``AWS_ENDPOINT_URL_S3`` and the AWS credential variables, with a bucket named
  ``my-bucket``; GCS through ``STORAGE_EMULATOR_HOST``, bucket ``my-bucket``; PostgreSQL
  through ``SWATH_DATABASE_URL`` (a fresh database).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

RUN_PYTHON = {"python", "py"}
RUN_SHELL = {"bash", "sh", "shell"}
CHECKED = {"ini", "yaml", "json", "toml"}
SHOWN = {"text", "mermaid", "console"}
LANGUAGES = RUN_PYTHON | RUN_SHELL | CHECKED | SHOWN

#: Pages whose blocks are not run, and why (each must say so here, not silently).
EXCLUDED_PAGES = {
    # Each block there runs a benchmark for minutes against peers installed by the `bench`
    # extra; the page is owned by the benchmarks work and its commands by benchmarks/*.py.
    "docs/benchmarks.md": "benchmark commands (minutes each, the bench extra's peers)",
}

_FENCE = re.compile(r"^(?P<indent> *)(?P<fence>```+|~~~+)(?P<info>.*)$")
_DIRECTIVE = re.compile(r"<!--\s*docs-test:\s*(?P<what>[a-z]+)\s*(?P<rest>.*?)\s*-->")
_TITLE = re.compile(r'title="(?P<title>[^"]+)"')


@dataclass
class Block:
    page: str
    line: int  # 1-based line of the opening fence
    language: str
    code: str
    title: str | None = None
    skip: str | None = None  # the reason, when skipped
    background: bool = False

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


@dataclass
class Page:
    path: str  # relative to the repository root
    blocks: list[Block] = field(default_factory=list)
    services: set[str] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def parse(path: Path) -> Page:
    rel = path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else path.name
    page = Page(rel)
    lines = path.read_text().splitlines()
    pending: dict[str, str] = {}
    i = 0
    while i < len(lines):
        line = lines[i]
        for d in _DIRECTIVE.finditer(line):
            what, rest = d.group("what"), d.group("rest")
            if what == "services":
                page.services |= set(rest.split())
            elif what in ("skip", "background"):
                pending[what] = rest
            else:
                page.errors.append(f"{rel}:{i + 1}: unknown docs-test directive {what!r}")
        m = _FENCE.match(line)
        if not m:
            if line.strip() and not _DIRECTIVE.search(line):
                pending = {}  # a directive applies to the block right after it
            i += 1
            continue
        fence, indent, info = m.group("fence"), len(m.group("indent")), m.group("info").strip()
        start = i
        body: list[str] = []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i][indent:] if lines[i][:indent].strip() == "" else lines[i])
            i += 1
        i += 1  # the closing fence
        language = info.split()[0].lstrip(".{").rstrip("}") if info else ""
        title = _TITLE.search(info)
        block = Block(
            rel,
            start + 1,
            language,
            "\n".join(body) + "\n",
            title=title.group("title") if title else None,
            skip=pending.get("skip"),
            background="background" in pending,
        )
        if "skip" in pending and not pending["skip"]:
            page.errors.append(f"{block.where}: a skipped block must say why")
        if language not in LANGUAGES:
            page.errors.append(
                f"{block.where}: code block language {language!r} is not one of "
                f"{sorted(LANGUAGES)} (diagrams and output are 'text')"
            )
        page.blocks.append(block)
        pending = {}
    return page
