"""GET /metrics: Prometheus text format, outside /api/v1.

Open like /health unless METRICS_TOKEN is set; then a scraper sends
`Authorization: Bearer <METRICS_TOKEN>` (API keys are for clients, not for Prometheus).
"""

from __future__ import annotations

import hmac
from typing import Any

from litestar import Request, Response, get
from litestar.plugins.prometheus import PrometheusConfig
from prometheus_client import CONTENT_TYPE_LATEST

from app.config import get_settings
from app.errors import problem_response
from app.metrics.collector import render_metrics

# HTTP requests by route template (never the raw path: /batches/1 and /batches/2 are one
# series), method and status, with a latency histogram. Unrouted paths (404) never reach
# route middleware, so they add no series either.
http_metrics = PrometheusConfig(app_name="production-control", prefix="http", group_path=True)


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
