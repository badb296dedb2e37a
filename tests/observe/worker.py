"""A process of the OpenTelemetry tests: configures the SDK with in-memory exporters, then
submits a job (``submit URL N``) or runs a runner until idle (``run URL CACHE NAME``), and
writes what it recorded to ``<name>.spans.jsonl`` / ``<name>.metrics.json``.

``run`` waits until every runner named in ``$SWATH_TEST_RUNNERS`` is ready, so that all of them
take part in the job."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from swath import Client, LocalFileSystemCache
from tests.observe.tasks import Leaf, Reduce, Split, SyncLeaf

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
reader = InMemoryMetricReader()
metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))


def dump(out: Path, name: str) -> None:
    with open(out / f"{name}.spans.jsonl", "w") as f:
        for span in exporter.get_finished_spans():
            f.write(
                json.dumps(
                    {
                        "name": span.name,
                        "trace_id": format(span.context.trace_id, "032x"),
                        "span_id": format(span.context.span_id, "016x"),
                        "parent_id": format(span.parent.span_id, "016x") if span.parent else None,
                        "attributes": dict(span.attributes or {}),
                        "status": span.status.status_code.name,
                        "process": name,
                    }
                )
                + "\n"
            )
    found: dict[str, float] = {}
    data = reader.get_metrics_data()
    for rm in data.resource_metrics if data else []:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                found[metric.name] = sum(p.value for p in metric.data.data_points)
    (out / f"{name}.metrics.json").write_text(json.dumps(found))


async def submit(url: str, n: int, out: Path) -> None:
    async with Client(url) as client:
        with trace.get_tracer("test").start_as_current_span("submit"):
            job = await client.jobs().submit("traced", Split(n), max_retries=0)
        print(job.id, flush=True)
    dump(out, "submitter")


async def run(url: str, cache: str, name: str, out: Path) -> None:
    import os

    async with Client(url) as client:
        runner = client.runner(
            [Split, Leaf, Reduce, SyncLeaf],
            LocalFileSystemCache(cache),
            max_concurrency=2,
            retry_delay=0.0,
            poll_interval=(0.01, 0.1),
        )
        (out / f"{name}.ready").touch()
        names = os.environ.get("SWATH_TEST_RUNNERS", name).split(",")
        deadline = time.monotonic() + 120
        while not all((out / f"{n}.ready").exists() for n in names):
            assert time.monotonic() < deadline, "the other runners did not start"
            await asyncio.sleep(0.05)
        await runner.run_all()
    dump(out, name)


if __name__ == "__main__":
    mode, url = sys.argv[1], sys.argv[2]
    if mode == "submit":
        asyncio.run(submit(url, int(sys.argv[3]), Path(sys.argv[4])))
    else:
        asyncio.run(run(url, sys.argv[3], sys.argv[4], Path(sys.argv[5])))
