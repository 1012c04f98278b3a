"""Prometheus metrics of one app (its own registry, so several apps never share counters).

    distill_requests_total{endpoint, status}   every answered request
    distill_request_seconds{endpoint}          latency histogram
    distill_batch_articles                     rows per model batch the batcher formed
    distill_queue_tokens                       tokens waiting for the model
    distill_tokens_total                       tokens run through the models (tokens/s: rate())
    distill_articles_total{filter}             records returned, scored or blocked
    distill_phase_seconds{phase}               per request: prepare (parse, prefilter and tokenise),
                                               tokenise (of that), wait (queued); per window: infer
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

ENDPOINTS = ("/v1/score", "/v1/filters", "/healthz", "/readyz", "/metrics", "/", "/docs", "/openapi.json")
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("distill_requests", "HTTP requests answered", ["endpoint", "status"], registry=r)
        self.request_seconds = Histogram("distill_request_seconds", "request latency", ["endpoint"],
                                         buckets=LATENCY_BUCKETS, registry=r)
        self.batch_articles = Histogram("distill_batch_articles", "articles per model batch",
                                        buckets=BATCH_BUCKETS, registry=r)
        self.queue_tokens = Gauge("distill_queue_tokens", "tokens queued for the model", registry=r)
        self.tokens = Counter("distill_tokens", "tokens run through the models", registry=r)
        self.articles = Counter("distill_articles", "records returned per filter", ["filter"], registry=r)
        self.phase_seconds = Histogram("distill_phase_seconds", "seconds per phase of a request's work",
                                       ["phase"], buckets=LATENCY_BUCKETS, registry=r)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class MetricsMiddleware:
    """Counts every HTTP answer by endpoint and status and times it (plain ASGI: no body buffering)."""

    def __init__(self, app: Any, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        endpoint = scope["path"] if scope["path"] in ENDPOINTS else "other"
        started = time.perf_counter()
        status = [500]  # what an exception before the response start becomes

        async def observed_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        finally:
            self.metrics.requests.labels(endpoint, str(status[0])).inc()
            self.metrics.request_seconds.labels(endpoint).observe(time.perf_counter() - started)
