"""Prometheus metrics: one registry per service instance, scraped at /metrics."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TypedDict

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class State(TypedDict):
    """What the service reports at scrape time."""

    jobs: dict[str, int]  # jobs in the store, by status
    queued: int
    models_loaded: int
    loads: int
    unloads: int


class _StateCollector(Collector):
    """Figures read from the store and the model pool at scrape time."""

    def __init__(self, read: Callable[[], State]) -> None:
        self._read = read

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        state = self._read()
        jobs = GaugeMetricFamily("whisper_mcp_jobs", "Jobs in the store, by status.", labels=["status"])
        for status, count in state["jobs"].items():
            jobs.add_metric([status], count)
        yield jobs
        yield GaugeMetricFamily("whisper_mcp_queue_length", "Jobs waiting to run.", value=state["queued"])
        yield GaugeMetricFamily("whisper_mcp_models_loaded", "Models in memory.", value=state["models_loaded"])
        loads = CounterMetricFamily("whisper_mcp_model_loads", "Model loads and unloads.", labels=["event"])
        loads.add_metric(["load"], state["loads"])
        loads.add_metric(["unload"], state["unloads"])
        yield loads


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.jobs_finished = Counter(
            "whisper_mcp_jobs_finished", "Jobs that ended, by outcome.", ["status"], registry=r
        )
        self.audio_seconds = Counter("whisper_mcp_audio_seconds", "Seconds of audio transcribed.", registry=r)
        self.processing_seconds = Histogram(
            "whisper_mcp_processing_seconds",
            "Wall time per transcription (decode, inference, writing).",
            buckets=(0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800),
            registry=r,
        )
        self.real_time_factor = Histogram(
            "whisper_mcp_real_time_factor",
            "Processing time divided by audio duration (lower is faster).",
            buckets=(0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 2, 5),
            registry=r,
        )
        self.pickup_seconds = Histogram(
            "whisper_mcp_pickup_seconds",
            "Time from queueing to the job's start.",
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120, 600),
            registry=r,
        )
        self.batch_size = Histogram(
            "whisper_mcp_batch_size",
            "Jobs transcribed together in one forward pass (batches of 2 or more).",
            buckets=(2, 4, 8, 16, 32),
            registry=r,
        )
        self.upload_bytes = Counter("whisper_mcp_upload_bytes", "Bytes of audio accepted.", registry=r)
        self.errors = Counter("whisper_mcp_errors", "Refused requests and failed jobs, by kind.", ["kind"], registry=r)
        self.realtime_sessions = Gauge(
            "whisper_mcp_realtime_sessions", "Live transcription sessions open (/v1/realtime).", registry=r
        )
        self.realtime_utterances = Counter(
            "whisper_mcp_realtime_utterances", "Live utterances transcribed, by outcome.", ["status"], registry=r
        )
        self.realtime_latency = Histogram(
            "whisper_mcp_realtime_latency_seconds",
            "Time from a live utterance's end (its commit) to its completed transcript.",
            buckets=(0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30),
            registry=r,
        )

    def watch(self, read_state: Callable[[], State]) -> None:
        self.registry.register(_StateCollector(read_state))

    def job_started(self, waited: float) -> None:
        self.pickup_seconds.observe(max(0.0, waited))

    def batch(self, jobs: int) -> None:
        self.batch_size.observe(jobs)

    def job_finished(self, status: str, audio_seconds: float, elapsed: float) -> None:
        self.jobs_finished.labels(status).inc()
        if status == "completed":
            self.audio_seconds.inc(audio_seconds)
            self.processing_seconds.observe(elapsed)
            if audio_seconds > 0:
                self.real_time_factor.observe(elapsed / audio_seconds)

    def utterance(self, status: str, latency: float) -> None:
        """A live utterance ended ("completed" or "failed"), ``latency`` seconds after its commit."""
        self.realtime_utterances.labels(status).inc()
        if status == "completed":
            self.realtime_latency.observe(max(0.0, latency))

    def render(self) -> bytes:
        """Blocking (reads the store): call off the event loop."""
        return generate_latest(self.registry)
