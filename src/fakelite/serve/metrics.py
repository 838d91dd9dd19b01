"""Prometheus metrics of the HTTP service, per app, summed over uvicorn workers in multiprocess mode."""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

__all__ = ["MULTIPROC_ENV", "Metrics", "multiprocess_metrics_dir"]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


class Metrics:
    """Prometheus collectors in a registry of this app's own (several apps can live in one process).

    With `--workers N` the service runs in prometheus_client's multiprocess mode ($PROMETHEUS_MULTIPROC_DIR, set
    by `run_server`): every worker writes its values to files there and any worker's /metrics answers the sum over
    all of them (gauges: `multiprocess_mode` below — live sums, the slowest model load, ready only when all are).
    """

    BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("fakelite_http_requests", "HTTP requests by endpoint, method and status code",
                                ["endpoint", "method", "code"], registry=r)
        self.latency = Histogram("fakelite_http_request_duration_seconds", "HTTP request latency",
                                 ["endpoint"], buckets=self.BUCKETS, registry=r)
        self.inflight = Gauge("fakelite_http_requests_in_flight", "HTTP requests being served now", registry=r,
                              multiprocess_mode="livesum")
        self.detect_running = Gauge("fakelite_detections_running", "Detections running on worker threads", registry=r,
                                    multiprocess_mode="livesum")
        self.detect_admitted = Gauge("fakelite_detect_admitted", "Detect requests admitted (running + waiting)",
                                     registry=r, multiprocess_mode="livesum")
        self.rejected = Counter("fakelite_rejected", "Requests refused before any work, by reason", ["reason"],
                                registry=r)
        self.model_load = Gauge("fakelite_model_load_seconds", "Seconds the model took to load", registry=r,
                                multiprocess_mode="max")
        self.model_ready = Gauge("fakelite_model_ready", "1 once the model is loaded (in every live worker)",
                                 registry=r, multiprocess_mode="livemin")
        self.stage = Histogram("fakelite_detect_stage_seconds", "Time of each stage of POST /v1/detect: receiving "
                               "the upload, waiting for a detection slot, and the detection on its worker thread "
                               "(limits probe, decode, faces, inference)", ["stage"], buckets=self.BUCKETS,
                               registry=r)
        self.upload_bytes = Histogram("fakelite_upload_bytes", "Size of accepted uploads",
                                      buckets=(1e3, 1e4, 1e5, 1e6, 5e6, 1e7, 2.5e7, 1e8), registry=r)

    def render(self) -> bytes:
        from prometheus_client import CollectorRegistry, generate_latest

        if os.environ.get(MULTIPROC_ENV):  # the sum over every worker process, not just this one
            from prometheus_client.multiprocess import MultiProcessCollector

            registry = CollectorRegistry()
            MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)



@contextmanager
def multiprocess_metrics_dir(workers: int):
    """With several workers, point $PROMETHEUS_MULTIPROC_DIR at an empty private folder for the server's life
    (unless the caller set one: then its stale *.db files are removed), so /metrics sums all workers."""
    if workers <= 1:
        yield None
        return
    given = os.environ.get(MULTIPROC_ENV)
    d = Path(given) if given else Path(tempfile.mkdtemp(prefix="fakelite-metrics-"))
    d.mkdir(parents=True, exist_ok=True)
    for f in d.glob("*.db"):  # values of an earlier run would be added to this one's
        f.unlink(missing_ok=True)
    os.environ[MULTIPROC_ENV] = str(d)
    try:
        yield d
    finally:
        if not given:
            os.environ.pop(MULTIPROC_ENV, None)
            shutil.rmtree(d, ignore_errors=True)
