"""The README's and the docs' complete examples type-check under ``mypy --strict``, so the
public API's types (``context.job_cache``, ``Client.runner`` options, ...) are what users see.

A code block counts as a complete example when it compiles as a module and starts with an import;
other blocks are fragments of a larger program (``await`` at top level, names from elsewhere),
and a block importing ``tilebox`` is the Tilebox original of a port.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BLOCK = re.compile(r"```python\n(.*?)```", re.S)


def complete_examples() -> dict[str, str]:
    found: dict[str, str] = {}
    for md in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        stem = md.relative_to(md.parent if md.parent == ROOT else ROOT / "docs").with_suffix("")
        for i, match in enumerate(BLOCK.finditer(md.read_text())):
            code = match.group(1)
            try:
                compile(code, md.name, "exec", dont_inherit=True)  # top-level await: a fragment
            except SyntaxError:
                continue
            if "from tilebox" in code:
                continue  # the Tilebox original of a port, not swath code
            if code.lstrip().startswith(("import ", "from ")):
                found[f"{stem.as_posix().replace('/', '_')}_{i}.py"] = code
    return found


def mypy_strict(directory: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-incremental",
            "--config-file=",
            "--python-version=3.11",
            "--ignore-missing-imports",
            str(directory),
        ],
        capture_output=True,
        text=True,
        cwd=directory,
        check=False,
    )


def test_docs_examples_type_check(tmp_path: Path) -> None:
    """Every complete example of README.md and docs/*.md passes mypy --strict (README's, the
    tasks page's, getting started's and the Tilebox port's are among them)."""
    examples = complete_examples()
    assert {"README_0.py", "README_1.py", "tasks_0.py", "getting-started_0.py"} <= set(examples)
    assert any(name.startswith("tilebox_") for name in examples)
    for name, code in examples.items():
        (tmp_path / name).write_text(code)
    result = mypy_strict(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_type_check_catches_a_misspelt_runner_option(tmp_path: Path) -> None:
    """The same check fails on a misspelt runner option and on the blocking mapping used as the
    async cache: the types are precise enough to catch them."""
    (tmp_path / "bad.py").write_text(
        "from swath import Client, ExecutionContext, InMemoryCache, Task\n"
        "class T(Task):\n"
        "    async def execute(self, context: ExecutionContext) -> None:\n"
        '        context.job_cache["k"] = b"v"\n'
        "def make(client: Client) -> None:\n"
        "    client.runner([T], InMemoryCache(), grase=1.0)\n"
    )
    result = mypy_strict(tmp_path)
    assert result.returncode == 1
    assert 'Unsupported target for indexed assignment ("Cache")' in result.stdout
    assert "No overload variant" in result.stdout
