"""OpenTelemetry traces and metrics of runners (the ``swath[otel]`` extra; docs/observability.md).

Imported only where OpenTelemetry is in use (:func:`swath._observe.otel`). What it records:

* a span per task execution (``swath.task <name>``), whose parent is the span the task was
  submitted under: the W3C ``traceparent`` stored with each task (the submitter's current span
  for a job's root task, the parent task's execution span for a subtask), so a job is one trace
  however many runners, processes and machines run it;
* cache operations of a task (its ``context.job_cache``) as child spans with byte counts;
* claims and commits as spans of the runner;
* metrics: tasks claimed, succeeded and failed, queue depth per cluster, cache bytes in and out.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from types import TracebackType
from typing import Any, cast

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from swath.cache import Cache
from swath.store.base import ClaimedTask

_PROPAGATOR = TraceContextTextMapPropagator()
INSTRUMENTATION = "swath"


def current_traceparent() -> str | None:
    """The ``traceparent`` of the current span (None when there is none)."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier.get("traceparent")


def traceparent_of(span: Span) -> str | None:
    """The ``traceparent`` that makes a span the parent of another (in another process)."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span))
    return carrier.get("traceparent")


def _parent(traceparent: str | None) -> otel_context.Context:
    if not traceparent:
        return otel_context.Context()  # a new trace
    return _PROPAGATOR.extract({"traceparent": traceparent}, context=otel_context.Context())


class _Instruments:
    """The metric instruments (made once per process, on the global meter provider)."""

    def __init__(self) -> None:
        meter = metrics.get_meter(INSTRUMENTATION)
        self.claimed = meter.create_counter(
            "swath.tasks.claimed", unit="{task}", description="Tasks leased by runners"
        )
        self.succeeded = meter.create_counter(
            "swath.tasks.succeeded", unit="{task}", description="Executions that returned"
        )
        self.failed = meter.create_counter(
            "swath.tasks.failed", unit="{task}", description="Executions that raised"
        )
        self.cache_in = meter.create_counter(
            "swath.cache.in", unit="By", description="Bytes tasks wrote to the cache"
        )
        self.cache_out = meter.create_counter(
            "swath.cache.out", unit="By", description="Bytes tasks read from the cache"
        )
        #: the latest queue depth seen per cluster (by any runner of this process)
        self.depth: dict[str, int] = {}
        meter.create_observable_gauge(
            "swath.queue.depth",
            callbacks=[self._observe_depth],
            unit="{task}",
            description="Queued tasks per cluster",
        )

    def _observe_depth(self, options: Any) -> Iterable[metrics.Observation]:
        return [metrics.Observation(n, {"cluster": c}) for c, n in sorted(self.depth.items())]


_instruments: _Instruments | None = None


def instruments() -> _Instruments:
    global _instruments
    if _instruments is None:
        _instruments = _Instruments()
    return _instruments


class Telemetry:
    """One runner's tracer and instruments."""

    #: how often a runner looks up the queue depth of its cluster for the gauge, seconds
    depth_interval = float(os.environ.get("SWATH_METRICS_INTERVAL", "5"))

    def __init__(self, runner_id: str, cluster: str) -> None:
        from swath import __version__

        self.tracer = trace.get_tracer(INSTRUMENTATION, __version__)
        self.runner_id = runner_id
        self.cluster = cluster
        self.metrics = instruments()

    # -- task executions -------------------------------------------------------------------------
    def start_task(self, claimed: ClaimedTask) -> Span:
        return self.tracer.start_span(
            f"swath.task {claimed.name}",
            context=_parent(claimed.traceparent),
            kind=SpanKind.CONSUMER,
            attributes={
                "swath.job.id": claimed.job_id,
                "swath.job.name": claimed.job_name,
                "swath.task.id": claimed.id,
                "swath.task.name": claimed.name,
                "swath.task.version": claimed.version,
                "swath.task.retry_count": claimed.retry_count,
                "swath.task.max_retries": claimed.max_retries,
                "swath.cluster": claimed.cluster,
                "swath.runner.id": self.runner_id,
            },
        )

    @contextlib.contextmanager
    def current(self, span: Span) -> Iterator[None]:
        with trace.use_span(span, end_on_exit=False):
            yield

    def end_task(self, span: Span, claimed: ClaimedTask, outcome: str, error: Any) -> None:
        span.set_attribute("swath.task.outcome", outcome)
        labels = {"cluster": claimed.cluster, "task": claimed.name}
        if outcome == "success":
            self.metrics.succeeded.add(1, labels)
        elif outcome == "failure":
            self.metrics.failed.add(1, labels)
            if isinstance(error, BaseException):
                span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, type(error).__name__))
        span.end()

    def job_cache(self, cache: Cache, span: Span, claimed: ClaimedTask) -> Cache:
        return cast(Cache, TracedCache(cache, self, span, {"cluster": claimed.cluster}))

    # -- the runner's own work -------------------------------------------------------------------
    @contextlib.contextmanager
    def span(self, name: str, **attributes: Any) -> Iterator[Span]:
        """A span of the runner (a claim, a commit): a root span, not part of a job's trace."""
        attributes["swath.runner.id"] = self.runner_id
        with self.tracer.start_as_current_span(
            name, context=otel_context.Context(), attributes=attributes
        ) as span:
            yield span

    def claimed(self, n: int) -> None:
        self.metrics.claimed.add(n, {"cluster": self.cluster})

    def queue_depth(self, depth: dict[str, int]) -> None:
        """The queued tasks per cluster, as just read: a cluster seen before (or this runner's
        own) whose queue is empty reports 0."""
        seen = self.metrics.depth
        for cluster in seen:
            seen[cluster] = 0
        seen[self.cluster] = 0
        seen.update(depth)


class TracedCache:
    """A task's job cache whose operations are child spans of the task's execution span, with
    the bytes they moved (``swath.cache.bytes``) and the runner's byte counters. It wraps the
    cache the context hands out; the cache backends know nothing of it."""

    def __init__(
        self, cache: Cache, telemetry: Telemetry, parent: Span, labels: dict[str, str]
    ) -> None:
        self._cache = cache
        self._tel = telemetry
        self._parent = trace.set_span_in_context(parent)
        self._parent_span = parent
        self._labels = labels

    @contextlib.contextmanager
    def _op(self, op: str, key: str | None) -> Iterator[Span]:
        attributes: dict[str, Any] = {"swath.cache.operation": op}
        if key is not None:
            attributes["swath.cache.key"] = key
        with self._tel.tracer.start_as_current_span(
            f"swath.cache {op}", context=self._parent, attributes=attributes
        ) as span:
            yield span

    def _moved(self, span: Span, n: int, direction: str) -> None:
        span.set_attribute("swath.cache.bytes", n)
        counter = self._tel.metrics.cache_in if direction == "in" else self._tel.metrics.cache_out
        counter.add(n, self._labels)

    async def put(self, key: str, value: Any) -> None:
        with self._op("put", key) as span:
            await self._cache.put(key, value)
            self._moved(span, memoryview(value).nbytes, "in")

    async def get(self, key: str) -> bytes:
        with self._op("get", key) as span:
            value = await self._cache.get(key)
            self._moved(span, len(value), "out")
            return value

    async def contains(self, key: str) -> bool:
        with self._op("contains", key):
            return await self._cache.contains(key)

    async def delete(self, key: str) -> None:
        with self._op("delete", key):
            await self._cache.delete(key)

    async def stat(self, key: str) -> Any:
        with self._op("stat", key):
            return await self._cache.stat(key)

    async def put_stream(self, key: str, chunks: AsyncIterable[Any] | Iterable[Any]) -> int:
        with self._op("put_stream", key) as span:
            n = await self._cache.put_stream(key, chunks)
            self._moved(span, n, "in")
            return n

    def open_write(self, key: str) -> _TracedOpenWrite:
        return _TracedOpenWrite(self, key)

    def stream(self, key: str, chunk_size: int = 8 * 1024 * 1024) -> AsyncIterator[bytes]:
        inner = self._cache.stream(key, chunk_size)  # a bad key or size raises here, at once
        return self._stream(key, inner)

    async def _stream(self, key: str, inner: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        span = self._tel.tracer.start_span(
            "swath.cache stream",
            context=self._parent,
            attributes={"swath.cache.operation": "stream", "swath.cache.key": key},
        )
        n = 0
        try:
            async for chunk in inner:
                n += len(chunk)
                yield chunk
        except BaseException as exc:
            span.record_exception(exc)
            raise
        finally:
            self._moved(span, n, "out")
            span.end()

    async def get_range(self, key: str, start: int, end: int | None = None) -> bytes:
        with self._op("get_range", key) as span:
            value = await self._cache.get_range(key, start, end)
            self._moved(span, len(value), "out")
            return value

    async def put_file(self, key: str, path: Any) -> int:
        with self._op("put_file", key) as span:
            n = await self._cache.put_file(key, path)
            self._moved(span, n, "in")
            return n

    async def get_file(self, key: str, path: Any) -> int:
        with self._op("get_file", key) as span:
            n = await self._cache.get_file(key, path)
            self._moved(span, n, "out")
            return n

    def group(self, name: str) -> Cache:
        group = TracedCache(self._cache.group(name), self._tel, self._parent_span, self._labels)
        return cast(Cache, group)

    def __aiter__(self) -> AsyncIterator[str]:
        return self._cache.__aiter__()

    def groups(self) -> AsyncIterator[str]:
        return self._cache.groups()

    async def items(self) -> AsyncIterator[tuple[str, bytes]]:
        async for key, value in self._cache.items():
            self._tel.metrics.cache_out.add(len(value), self._labels)
            yield key, value

    async def clear(self) -> None:
        with self._op("clear", None):
            await self._cache.clear()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cache, name)

    def __repr__(self) -> str:
        return repr(self._cache)


class _TracedOpenWrite:
    def __init__(self, cache: TracedCache, key: str) -> None:
        self._inner = cache._cache.open_write(key)  # validates the key now, as the cache does
        self._cache = cache
        self._key = key
        self._span: Span | None = None

    async def __aenter__(self) -> Any:
        self._span = self._cache._tel.tracer.start_span(
            "swath.cache open_write",
            context=self._cache._parent,
            attributes={"swath.cache.operation": "open_write", "swath.cache.key": self._key},
        )
        try:
            self._writer = await self._inner.__aenter__()
        except BaseException as exc:
            self._span.record_exception(exc)
            self._span.end()
            raise
        return self._writer

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._span is not None
        try:
            await self._inner.__aexit__(et, e, tb)
        finally:
            if e is not None:
                self._span.record_exception(e)
            self._cache._moved(self._span, self._writer.bytes_written, "in")
            self._span.end()


def serve_metrics(port: int, host: str = "127.0.0.1") -> None:
    """Serve this process's swath metrics for Prometheus on ``http://host:port/metrics``
    (``swath runner --metrics-port``): an OpenTelemetry meter provider whose reader is the
    Prometheus exporter, and prometheus_client's HTTP server (a daemon thread)."""
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from opentelemetry.sdk.metrics import MeterProvider
    from prometheus_client import start_http_server

    metrics.set_meter_provider(MeterProvider(metric_readers=[PrometheusMetricReader()]))
    start_http_server(port, addr=host)
