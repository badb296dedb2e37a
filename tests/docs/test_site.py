"""The documentation site builds with ``mkdocs build --strict`` (no broken link, no missing page,
no docstring mkdocstrings cannot render), offline, with an API reference of every public name
and a CLI reference of every command."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import swath
from swath.cli import main as cli

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("site")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    log = result.stdout + result.stderr
    assert result.returncode == 0, log
    return out, log


def test_site_builds_strictly_without_warnings(site: tuple[Path, str]) -> None:
    """mkdocs build --strict succeeds and logs no WARNING or ERROR line (strict mode stops at
    warnings of mkdocs itself; this also catches those that plugins only log)."""
    _, log = site
    bad = [line for line in log.splitlines() if re.search(r"\b(WARNING|ERROR)\b", line)]
    assert not bad, "\n".join(bad)


def test_site_fetches_nothing_from_the_internet(site: tuple[Path, str]) -> None:
    """No page loads a font, a stylesheet or a script from another host (theme.font is off, no
    CDN): the site reads and highlights code offline."""
    out, _ = site
    external = re.compile(r"""<(?:link|script)[^>]+(?:href|src)=["']https?://""", re.I)
    offenders = [
        str(page.relative_to(out))
        for page in out.rglob("*.html")
        if external.search(page.read_text(errors="replace"))
    ]
    assert not offenders, offenders
    assert not any("fonts.googleapis" in p.read_text() for p in out.rglob("*.html"))
    # code is highlighted at build time by Pygments (spans with classes), not by JavaScript
    assert '<span class="k">async</span>' in (out / "getting-started" / "index.html").read_text()
    # Mermaid blocks go through the superfences custom fence, as material's mermaid support
    # expects them (its script draws them; without it they stay readable source text)
    assert '<pre class="mermaid"><code>graph TD' in (out / "tasks" / "index.html").read_text()


def test_api_reference_documents_every_public_name(site: tuple[Path, str]) -> None:
    """Every name of swath.__all__ has its entry (an anchor) in the API reference, generated
    from its docstring, as do the job stores."""
    out, _ = site
    page = (out / "reference" / "api" / "index.html").read_text()
    anchors = set(re.findall(r'id="([\w.]+)"', page))
    documented = {a.rsplit(".", 1)[-1] for a in anchors}
    missing = sorted(set(swath.__all__) - documented)
    assert not missing, f"add them to docs/reference/api.md: {missing}"
    assert {"SQLiteJobStore", "PostgresJobStore", "store_from_url"} <= documented
    # the docstrings themselves are there, not only headings
    assert "Run until no runnable work for this cluster remains" in page


def test_cli_reference_lists_every_command(site: tuple[Path, str]) -> None:
    """The CLI reference is generated from the click commands: every command and subcommand of
    ``swath`` is on the page."""
    out, _ = site
    page = (out / "reference" / "cli" / "index.html").read_text()
    commands: list[str] = []
    for name, command in cli.commands.items():
        commands.append(f"swath {name}")
        for sub in getattr(command, "commands", {}):
            commands.append(f"swath {name} {sub}")
    missing = [c for c in commands if c not in page]
    assert not missing, missing
