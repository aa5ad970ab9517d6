"""GET /metrics: Prometheus text format, outside /api/v1.

Open like /health unless METRICS_TOKEN is set; then a scraper sends
`Authorization: Bearer <METRICS_TOKEN>` (API keys are for clients, not for Prometheus).
"""

from __future__ import annotations

import hmac
import time
from typing import Any, ClassVar

from litestar import Request, Response, get
from litestar.enums import ScopeType
from litestar.plugins.prometheus import PrometheusConfig, PrometheusMiddleware
from litestar.types import Message, Receive, Scope, Send
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram

from app.config import get_settings
from app.errors import problem_response
from app.metrics.collector import render_metrics


class RouteMetricsMiddleware(PrometheusMiddleware):
    """Litestar's PrometheusMiddleware series (same names, labels and values) for the
    configuration below, with each label set's metric children looked up once per process.

    Litestar's own builds a Request, its URL and two label dicts and makes five `labels()`
    lookups per request: ~6% of the api's CPU on the single-product POST.
    """

    _in_progress: ClassVar[dict[tuple[str, str], Gauge]] = {}
    _finished: ClassVar[dict[tuple[str, str, int], tuple[Counter, Histogram, Counter | None]]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope["method"] if scope["type"] == ScopeType.HTTP else scope["type"]
        path: str = scope["path_template"]
        labels: dict[str, str | int | float] = {
            "method": method,
            "path": path,
            "status_code": 200,
            "app_name": self._config.app_name,
        }
        in_progress = self._in_progress.get((method, path))
        if in_progress is None:
            in_progress = self.requests_in_progress(labels).labels(*labels.values())
            self._in_progress[(method, path)] = in_progress
        started = time.perf_counter()
        status, duration = 200, 0.0

        async def timed_send(message: Message) -> None:
            nonlocal status, duration
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                duration = time.perf_counter() - started
            await send(message)

        in_progress.inc()
        try:
            await self.app(scope, receive, timed_send)
        finally:
            in_progress.dec()
            finished = self._finished.get((method, path, status))
            if finished is None:
                labels["status_code"] = status
                values = list(labels.values())
                errors = self.requests_error_count(labels) if status >= 500 else None
                finished = (
                    self.request_count(labels).labels(*values),
                    self.request_time(labels).labels(*values),
                    None if errors is None else errors.labels(*values),
                )
                self._finished[(method, path, status)] = finished
            count, latency, error_count = finished
            if error_count is not None:
                error_count.inc()
            count.inc()
            latency.observe(duration)


# HTTP requests by route template (never the raw path: /batches/1 and /batches/2 are one
# series), method and status, with a latency histogram. Unrouted paths (404) never reach
# route middleware, so they add no series either.
http_metrics = PrometheusConfig(
    app_name="production-control",
    prefix="http",
    group_path=True,
    middleware_class=RouteMetricsMiddleware,
)


@get("/metrics", include_in_schema=False)
async def metrics(request: Request[Any, Any, Any]) -> Response[Any]:
    token = get_settings().metrics_token
    if token:
        sent = request.headers.get("authorization", "")
        if not hmac.compare_digest(sent.encode(), f"Bearer {token}".encode()):
            return problem_response(
                401,
                "Unauthorized",
                "/metrics needs Authorization: Bearer <METRICS_TOKEN>",
                "unauthorized",
                headers={"WWW-Authenticate": "Bearer"},
            )
    return Response(await render_metrics(), media_type=CONTENT_TYPE_LATEST)
