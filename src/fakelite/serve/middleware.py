"""ASGI middleware of the HTTP service: request metrics with a bounded endpoint label, and security headers."""

from __future__ import annotations

import time
from typing import Any

from fakelite.serve.metrics import Metrics

__all__ = ["PAGE_CSP", "ServiceMiddleware", "endpoint_label"]

PAGE_CSP = ("default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; script-src 'self'; "
            "style-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")


KNOWN_ENDPOINTS = ("/v1/detect", "/v1/model", "/healthz", "/readyz", "/metrics", "/docs", "/openapi.json", "/")


def endpoint_label(path: str) -> str:
    """The metrics label of a request path: a known endpoint, "/static" or "other"."""
    if path.startswith("/static/"):
        return "/static"
    return path if path in KNOWN_ENDPOINTS else "other"  # bounded label set, whatever clients request


class ServiceMiddleware:
    """Pure ASGI middleware: request metrics and security headers (CSP on the page, nosniff everywhere)."""

    def __init__(self, app: Any, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        endpoint = endpoint_label(scope.get("path", ""))
        status = {"code": 500}
        page = endpoint in ("/", "/static")

        async def send_wrapper(message: dict) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                headers = list(message.get("headers", []))
                headers += [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer")]
                if page:
                    headers += [(b"content-security-policy", PAGE_CSP.encode()), (b"x-frame-options", b"DENY")]
                message = {**message, "headers": headers}
            await send(message)

        self.metrics.inflight.inc()
        t0 = time.perf_counter()
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.inflight.dec()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - t0)
            self.metrics.requests.labels(endpoint, scope.get("method", ""), str(status["code"])).inc()
