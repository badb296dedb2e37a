"""The markdown table and the PNG charts of a run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

MiB = 1 << 20
Row = dict[str, Any]

TITLES = {
    "W1": "W1 dispatch: one parent fans out N no-op tasks",
    "W2": "W2 shared blobs: producers write 16 MiB blobs, one consumer reads them all",
    "W3": "W3 one large blob streamed in and out",
    "W4": "W4 diamond DAG: 100-way fan-out and fan-in, one task fails once and is retried",
    "W5": "W5 the imagery pipeline of `swath demo` at 4x its size",
}


def _mib(n: float) -> str:
    return f"{n / MiB:,.0f} MiB"


def _f(v: Any, fmt: str = ",.2f") -> str:
    return format(v, fmt) if isinstance(v, int | float) else "-"


def cpu_own(r: Row) -> float:
    """CPU seconds of the case's processes in the timed section (the whole case if unknown)."""
    return float(r.get("timed_cpu_s", r["cpu_s"]))


def cpu_servers(r: Row) -> float:
    return float(r.get("timed_service_cpu_s", r["service_cpu_s"]))


def _cpu(r: Row) -> str:
    return f"{cpu_own(r):.1f} + {cpu_servers(r):.1f}"


def _rss(r: Row) -> str:
    own = _mib(r["peak_rss"])
    return f"{own} + {_mib(r['service_peak_rss'])}" if r["service_peak_rss"] else own


COMMON_TAIL: list[tuple[str, Callable[[Row], str]]] = [
    ("CPU s (own + servers)", _cpu),
    ("peak RSS (own + servers)", _rss),
]

COLUMNS: dict[str, list[tuple[str, Callable[[Row], str]]]] = {
    "W1": [
        ("tasks/s", lambda r: _f(r.get("tasks_per_s"), ",.0f")),
        ("submit s", lambda r: _f(r.get("submit_s"))),
        ("execute s", lambda r: _f(r.get("exec_s"))),
        (
            "CPU µs/task",
            lambda r: (
                _f((cpu_own(r) + cpu_servers(r)) / r["tasks"] * 1e6, ",.0f")
                if r.get("tasks")
                else "-"
            ),
        ),
    ],
    "W2": [
        ("wall s", lambda r: _f(r.get("run_s"))),
        ("MB/s", lambda r: _f(r.get("mb_per_s"), ",.0f")),
        ("write s", lambda r: _f(r.get("write_s"))),
        ("read s", lambda r: _f(r.get("read_s"))),
    ],
    "W3": [
        ("write MB/s", lambda r: _f(r.get("write_mb_per_s"), ",.0f")),
        ("read MB/s", lambda r: _f(r.get("read_mb_per_s"), ",.0f")),
    ],
    "W4": [
        ("wall s", lambda r: _f(r.get("run_s"))),
        ("attempts of the failing task", lambda r: str(r.get("attempts", "-"))),
    ],
    "W5": [
        ("wall s", lambda r: _f(r.get("run_s"))),
        ("NDVI mean", lambda r: _f(r.get("mean"), ".4f")),
    ],
}


def not_run(case: Any, why: str) -> Row:
    """The row of a case not run (a smaller size of it timed out)."""
    from benchmarks.peers._harness import Outcome

    row = Outcome(case, status="not run", error=why).as_json()
    row["params"] = {k: v for k, v in row["params"].items() if k != "scratch"}
    return row


def _status(r: Row) -> str:
    return "" if r["status"] == "ok" else (r["error"] or r["status"])[:120]


def one_line(r: Row) -> str:
    cols = COLUMNS[r["workload"]]
    figures = "" if r["status"] != "ok" else ", ".join(f"{h} {fn(r)}" for h, fn in cols)
    return (f"{r['workload']} {r['system']} [{r['variant']}] {r['label']}: "
            f"{figures or _status(r)}; case {r['wall_s']:.1f} s, {_rss(r)}")  # fmt: skip


def markdown(payload: dict[str, Any]) -> str:
    rows: list[Row] = payload["rows"]
    lines: list[str] = []
    for w in dict.fromkeys(r["workload"] for r in rows):
        members = [r for r in rows if r["workload"] == w]
        cols = COLUMNS[w] + COMMON_TAIL
        lines += [f"### {TITLES[w]}", ""]
        lines.append("| system | variant | size | " + " | ".join(h for h, _ in cols) + " |")
        lines.append("|---" * (3 + len(cols)) + "|")
        for r in members:
            if r["status"] == "ok":
                cells = [fn(r) for _, fn in cols]
            else:
                cells = [_status(r)] + ["-"] * (len(cols) - 3) + [fn(r) for _, fn in COMMON_TAIL]
            lines.append(
                f"| {r['system']} | {r['variant']} | {r['label']} | " + " | ".join(cells) + " |"
            )
        lines.append("")
    lines.append(
        f"Run of {payload['when']} ({payload['mode']}, {payload['total_s']:.0f} s, load average "
        f"{payload['loadavg_at_start'][0]:.1f} at the start). CPU s: the case's processes "
        "in the timed section + the servers it used (PostgreSQL, redis-server, "
        "the Prefect server, rclone, fake-gcs-server) during the case. Peak RSS: the case's "
        "process tree summed at its highest sample (20 Hz) + the servers' likewise."
    )
    for m in payload.get("merged_runs", []):
        lines.append(
            f"\nRows of {', '.join(m['cases'])} from a later invocation (`--merge`) of "
            f"{m['when']} ({m['total_s']:.0f} s, load average {m['loadavg_at_start'][0]:.1f} at "
            "the start)."
        )
    return "\n".join(lines) + "\n"


# -- charts ---------------------------------------------------------------------------------------
def _ok(rows: list[Row], w: str, variant: str | None = "tuned") -> list[Row]:
    return [
        r
        for r in rows
        if r["workload"] == w
        and r["status"] == "ok"
        and (variant is None or r["variant"] == variant)
    ]


def _by_system(rows: list[Row]) -> dict[str, list[Row]]:
    out: dict[str, list[Row]] = {}
    for r in rows:
        out.setdefault(r["system"], []).append(r)
    return {k: sorted(v, key=lambda r: r["x"]) for k, v in out.items()}


def charts(payload: dict[str, Any], out: Path) -> list[Path]:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows: list[Row] = payload["rows"]
    written: list[Path] = []
    subtitle = f"{payload['when']}, {payload['machine'].get('cpus')} CPUs ({payload['mode']} run)"

    def save(fig: Any, name: str) -> None:
        fig.tight_layout()
        path = out / name
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

    def timeouts(w: str) -> str:
        lost = [f"{r['system']} {r['label']}: {r['error']}" for r in rows
                if r["workload"] == w and r["status"] != "ok"]  # fmt: skip
        return ("not shown: " + "; ".join(lost))[:160] if lost else ""

    palette = plt.get_cmap("tab20").colors
    names = list(dict.fromkeys(r["system"] for r in rows))

    def style(system: str) -> dict[str, Any]:
        """swath bold and solid, the peers thinner and dashed; one colour per system."""
        color = palette[(2 * names.index(system)) % 20 + (names.index(system) * 2 // 20) % 2]
        if system.startswith("swath"):
            return {"linewidth": 2.6, "linestyle": "-", "marker": "o", "color": color}
        return {"linewidth": 1.4, "linestyle": "--", "marker": "s", "markersize": 4,
                "color": color}  # fmt: skip

    if _ok(rows, "W1"):
        fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
        for system, rs in _by_system(_ok(rows, "W1")).items():
            xs = [r["x"] for r in rs]
            a.plot(xs, [r["tasks_per_s"] for r in rs], label=system, **style(system))
            b.plot(xs, [(cpu_own(r) + cpu_servers(r)) / r["tasks"] * 1e6 for r in rs],
                   label=system, **style(system))  # fmt: skip
        a.set(xscale="log", yscale="log", xlabel="tasks", ylabel="tasks/s (higher is better)")
        b.set(xscale="log", yscale="log", xlabel="tasks",
              ylabel="CPU µs per task, own + servers (lower is better)")  # fmt: skip
        a.legend(fontsize=8)
        a.grid(alpha=0.3)
        b.grid(alpha=0.3)
        fig.suptitle(f"W1 dispatch, tuned, 64 in flight — {subtitle}\n{timeouts('W1')}", fontsize=9)
        save(fig, "w1_dispatch.png")

    if _ok(rows, "W2"):
        fig, (a, b, c) = plt.subplots(1, 3, figsize=(15, 4.6))
        for system, rs in _by_system(_ok(rows, "W2")).items():
            xs = [r["x"] / 2**30 for r in rs]
            a.plot(xs, [r["run_s"] for r in rs], label=system, **style(system))
            b.plot(xs, [r["peak_rss"] / MiB for r in rs], label=system, **style(system))
            c.plot(xs, [r["service_peak_rss"] / MiB for r in rs], label=system, **style(system))
        a.set(
            xscale="log", yscale="log", xlabel="total data, GiB", ylabel="wall s (lower is better)"
        )
        b.set(xscale="log", yscale="log", xlabel="total data, GiB",
              ylabel="peak RSS of the case's processes, MiB")  # fmt: skip
        c.set(xscale="log", yscale="log", xlabel="total data, GiB",
              ylabel="peak RSS of the servers it used, MiB")  # fmt: skip
        c.set_title("redis, PostgreSQL, Prefect server, rclone, fake-gcs-server", fontsize=8)
        for ax in (a, b, c):
            ax.grid(alpha=0.3)
            ticks = sorted({r["x"] / 2**30 for r in _ok(rows, "W2")})
            ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        a.legend(fontsize=7)
        fig.suptitle(f"W2 shared blobs (16 MiB each), 8 producers at a time — {subtitle}\n"
                     f"{timeouts('W2')}", fontsize=9)  # fmt: skip
        save(fig, "w2_blobs.png")

    for w, name, metrics in (
        ("W3", "w3_blob.png", (("write_mb_per_s", "write MB/s"), ("read_mb_per_s", "read MB/s"))),
        ("W4", "w4_dag.png", (("run_s", "wall s"),)),
        ("W5", "w5_imagery.png", (("run_s", "wall s"),)),
    ):
        rs = _ok(rows, w, None)
        if not rs:
            continue
        labels = [r["system"] + (f" [{r['variant']}]" if w == "W4" else "")
                  + (f" {r['label']}" if w == "W3" else "") for r in rs]  # fmt: skip
        fig, axes = plt.subplots(
            1, len(metrics) + 1, figsize=(5 * (len(metrics) + 1), 0.5 + 0.32 * len(rs) + 1.5)
        )
        for ax, (key, title) in zip(
            axes, (*metrics, ("rss", "peak RSS, MiB (servers hatched)")), strict=True
        ):
            colors = ["tab:orange" if r["system"].startswith("swath") else "tab:blue" for r in rs]
            if key == "rss":
                own = [r["peak_rss"] / MiB for r in rs]
                servers = [r["service_peak_rss"] / MiB for r in rs]
                ax.barh(range(len(rs)), own, color=colors, label="the case's processes")
                ax.barh(range(len(rs)), servers, left=own, color=colors, alpha=0.35,
                        hatch="//", label="the servers it used")  # fmt: skip
                ax.legend(fontsize=7, loc="lower right")
            else:
                ax.barh(range(len(rs)), [r.get(key, 0) for r in rs], color=colors)
            ax.set_yticks(range(len(rs)), labels if ax is axes[0] else [""] * len(rs), fontsize=7)
            ax.invert_yaxis()
            ax.set_title(title, fontsize=9)
            ax.grid(axis="x", alpha=0.3)
        fig.suptitle(f"{TITLES[w]} — {subtitle}\n{timeouts(w)}", fontsize=8)
        save(fig, name)
    return written
