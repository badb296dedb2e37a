"""A job's task graph as a diagram: Mermaid text, Graphviz DOT text, or SVG (rendered by
Graphviz's ``dot`` program when it is installed), and a notebook display.

Nodes are tasks labelled with their name (or display) and state; solid edges go from a parent to
its subtasks, dotted edges from a dependency to its dependent.
"""

from __future__ import annotations

import html
import shutil
import subprocess
from collections.abc import Sequence
from typing import Literal

from swath._validate import printable
from swath.store.base import TaskInfo, TaskState

DiagramFormat = Literal["mermaid", "dot", "svg"]

#: fill and stroke colour of a node, by task state
_COLORS = {
    TaskState.COMPLETED: ("#d4edda", "#28a745"),
    TaskState.COMPUTED: ("#fff3cd", "#ffc107"),
    TaskState.RUNNING: ("#fff3cd", "#ffc107"),
    TaskState.FAILED: ("#f8d7da", "#dc3545"),
    TaskState.FAILED_OPTIONAL: ("#fde2c8", "#fd7e14"),
    TaskState.SKIPPED: ("#e2e3e5", "#6c757d"),
    TaskState.CANCELED: ("#e2e3e5", "#6c757d"),
    TaskState.QUEUED: ("#ffffff", "#6c757d"),
}
_STATE_CLASS = {
    TaskState.COMPLETED: "done",
    TaskState.COMPUTED: "running",
    TaskState.RUNNING: "running",
    TaskState.FAILED: "failed",
    TaskState.FAILED_OPTIONAL: "optional",
    TaskState.SKIPPED: "stopped",
    TaskState.CANCELED: "stopped",
    TaskState.QUEUED: "queued",
}


class GraphvizNotFoundError(RuntimeError):
    """SVG diagrams need Graphviz's ``dot`` program (Debian: ``apt-get install graphviz``)."""


def _label(task: TaskInfo) -> str:
    return task.display or task.name


#: characters a Mermaid label may hold as they are (inside "..."); any other is an entity
_MERMAID_SAFE = frozenset(" .,:_-/()+*=!?@%$'~^|")


def mermaid_text(text: str) -> str:
    """``text`` for a quoted Mermaid label: letters, digits and harmless punctuation as they
    are, every other character as an entity code (``#34;``), so that a task's name or display
    cannot close the label, start a line, add nodes or edges, or bring in HTML."""
    return "".join(
        ch if (ch.isalnum() and ch.isprintable()) or ch in _MERMAID_SAFE else f"#{ord(ch)};"
        for ch in text
    )


def mermaid(tasks: Sequence[TaskInfo]) -> str:
    """Mermaid flowchart text for a list of tasks."""
    index = {t.id: f"t{i}" for i, t in enumerate(tasks)}
    lines = ["graph TD"]
    for t in tasks:
        label = mermaid_text(_label(t))
        lines.append(f'    {index[t.id]}["{label}<br/>{t.state.value}"]:::{_STATE_CLASS[t.state]}')
    for t in tasks:
        if t.parent_id in index:
            lines.append(f"    {index[t.parent_id]} --> {index[t.id]}")
        for dep in t.depends_on:
            if dep in index:
                lines.append(f"    {index[dep]} -.-> {index[t.id]}")
    classes = {}
    for state, name in _STATE_CLASS.items():
        fill, stroke = _COLORS[state]
        classes[name] = f"    classDef {name} fill:{fill},stroke:{stroke}"
    lines += list(classes.values())
    return "\n".join(lines) + "\n"


def _dot_string(text: str) -> str:
    """A DOT string: quotes, backslashes and newlines escaped, other characters that are not
    printable shown as ``\\x1b``-style text (DOT output goes to terminals too)."""
    text = printable(text, multiline=True)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def dot(tasks: Sequence[TaskInfo]) -> str:
    """Graphviz DOT text for a list of tasks."""
    index = {t.id: f"t{i}" for i, t in enumerate(tasks)}
    lines = [
        "digraph job {",
        "    rankdir=TB;",
        '    node [shape=box, style="rounded,filled", fontname="Helvetica"];',
    ]
    for t in tasks:
        fill, stroke = _COLORS[t.state]
        label = _dot_string(f"{_label(t)}\n{t.state.value}")
        lines.append(f'    {index[t.id]} [label={label}, fillcolor="{fill}", color="{stroke}"];')
    for t in tasks:
        if t.parent_id in index:
            lines.append(f"    {index[t.parent_id]} -> {index[t.id]};")
        for dep in t.depends_on:
            if dep in index:
                lines.append(f"    {index[dep]} -> {index[t.id]} [style=dashed];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def svg(tasks: Sequence[TaskInfo], *, timeout: float = 60.0) -> str:
    """The diagram as SVG, rendered by Graphviz's ``dot``; :class:`GraphvizNotFoundError` if it
    is not installed."""
    program = shutil.which("dot")
    if program is None:
        raise GraphvizNotFoundError(
            "an SVG diagram needs Graphviz's 'dot' program on PATH (Debian/Ubuntu: apt-get "
            "install graphviz; macOS: brew install graphviz); format='mermaid' or 'dot' need "
            "nothing"
        )
    result = subprocess.run(
        [program, "-Tsvg"],
        input=dot(tasks).encode(),
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"dot failed: {result.stderr.decode(errors='replace').strip()}")
    return result.stdout.decode()


def render(tasks: Sequence[TaskInfo], format: DiagramFormat = "mermaid") -> str:
    """The diagram of ``tasks`` in ``format``: ``"mermaid"``, ``"dot"`` or ``"svg"``."""
    if format == "mermaid":
        return mermaid(tasks)
    if format == "dot":
        return dot(tasks)
    if format == "svg":
        return svg(tasks)
    raise ValueError(f"format must be 'mermaid', 'dot' or 'svg', not {format!r}")


class JobDiagram:
    """A job's task graph at one moment, for notebooks: Jupyter shows it as SVG when Graphviz
    is installed, else as Mermaid text in HTML. ``.mermaid``, ``.dot`` and ``.svg()`` give the
    text forms."""

    def __init__(self, tasks: Sequence[TaskInfo]) -> None:
        self.tasks = list(tasks)

    @property
    def mermaid(self) -> str:
        return mermaid(self.tasks)

    @property
    def dot(self) -> str:
        return dot(self.tasks)

    def svg(self) -> str:
        return svg(self.tasks)

    def _repr_svg_(self) -> str | None:
        try:
            return self.svg()
        except (GraphvizNotFoundError, RuntimeError, subprocess.TimeoutExpired):
            return None  # no Graphviz: the HTML form shows the Mermaid text

    def _repr_html_(self) -> str:
        rendered = self._repr_svg_()
        if rendered is not None:
            return rendered
        return f'<pre class="mermaid">{html.escape(self.mermaid)}</pre>'

    def __repr__(self) -> str:
        return f"JobDiagram({len(self.tasks)} tasks)"
