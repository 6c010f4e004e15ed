"""Prometheus metrics of one service (its own registry: two apps in one process do not clash)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

__all__ = ["Metrics"]


class _Live(Collector):
    """Gauges read at scrape time: queue depth, requests in flight, jobs by state."""

    def __init__(self, service: Any) -> None:
        self.service = service

    def collect(self) -> Iterator[GaugeMetricFamily]:
        s = self.service
        yield GaugeMetricFamily("pyroblur_queue_depth", "detector calls waiting for a batch", value=s.batcher.depth())
        yield GaugeMetricFamily("pyroblur_inflight_requests", "image requests admitted", value=s.inflight)
        jobs = GaugeMetricFamily("pyroblur_jobs", "jobs by state", labels=["state"])
        counts = s.store.count_by_state()
        for state in ("queued", "running", "completed", "failed", "cancelled"):
            jobs.add_metric([state], counts.get(state, 0))
        yield jobs
        yield GaugeMetricFamily("pyroblur_model_reloads", "promotions picked up", value=s.holder.reloads)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("pyroblur_requests", "HTTP requests", ["method", "route", "status"], registry=r)
        self.latency = Histogram("pyroblur_request_seconds", "HTTP request latency", ["route"], registry=r)
        self.batch_frames = Histogram(
            "pyroblur_batch_frames", "frames per detector call", buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=r
        )
        self.rejected = Counter("pyroblur_rejected", "requests refused with 503 (queue full)", registry=r)
        self.jobs_finished = Counter("pyroblur_jobs_finished", "jobs that reached a final state", ["state"], registry=r)

    def bind(self, service: Any) -> None:
        self.registry.register(_Live(service))

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
