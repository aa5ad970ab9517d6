"""Liveness, readiness, the OpenAPI document and the docs page; request ids."""

from __future__ import annotations

from app.config import VERSION

# Every endpoint of the foundation, as (method, OpenAPI path).
FOUNDATION_OPERATIONS = {
    ("get", "/health"),
    ("get", "/ready"),
    ("post", "/api/v1/batches"),
    ("get", "/api/v1/batches"),
    ("get", "/api/v1/batches/{batch_id}"),
    ("patch", "/api/v1/batches/{batch_id}"),
    ("post", "/api/v1/batches/{batch_id}/close"),
    ("post", "/api/v1/batches/{batch_id}/aggregate"),
    ("post", "/api/v1/batches/{batch_id}/aggregate-async"),
    ("post", "/api/v1/products"),
    ("get", "/api/v1/products"),
    ("get", "/api/v1/tasks"),
    ("get", "/api/v1/tasks/{task_id}"),
    ("post", "/api/v1/tasks/{task_id}/cancel"),
    ("get", "/api/v1/tasks/{task_id}/events"),
    ("get", "/api/v1/work-centers"),
    ("get", "/api/v1/work-centers/{work_center_id}"),
}


async def test_health(client):
    response = await client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "version": VERSION}


async def test_ready_checks_dependencies(client):
    response = await client.get("/ready")
    body = response.json()
    assert response.status_code in (200, 503), response.text
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["broker"] == "ok"
    assert body["status"] == ("ok" if response.status_code == 200 else "unavailable")
    assert (body["status"] == "ok") == all(v == "ok" for v in body["checks"].values())


async def test_request_id_is_echoed_or_generated(client):
    echoed = await client.get("/health", headers={"X-Request-ID": "abc-123"})
    assert echoed.headers["x-request-id"] == "abc-123"
    generated = await client.get("/api/v1/batches")
    assert len(generated.headers["x-request-id"]) >= 16


async def test_openapi_lists_every_endpoint_with_errors(client):
    response = await client.get("/schema/openapi.json")
    assert response.status_code == 200
    schema = response.json()
    operations = {
        (method, path.rstrip("/") or "/")
        for path, item in schema["paths"].items()
        for method in item
        if method in {"get", "post", "patch", "put", "delete"}
    }
    assert operations >= FOUNDATION_OPERATIONS, FOUNDATION_OPERATIONS - operations
    paths = {path.rstrip("/"): item for path, item in schema["paths"].items()}
    create = paths["/api/v1/batches"]["post"]
    assert {"201", "409", "422"} <= set(create["responses"])
    problem_422 = create["responses"]["422"]["content"]
    assert "application/problem+json" in problem_422
    aggregate = paths["/api/v1/batches/{batch_id}/aggregate"]["post"]
    assert {"200", "400", "404", "422"} <= set(aggregate["responses"])
    task_param = next(
        p for p in paths["/api/v1/tasks/{task_id}"]["get"]["parameters"] if p["name"] == "task_id"
    )
    assert task_param["in"] == "path"
    assert task_param["schema"].get("format") == "uuid"


async def test_docs_page_is_html(client):
    response = await client.get("/docs")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "<html" in response.text.lower()
    assert "/schema/openapi.json" in response.text or "openapi" in response.text.lower()


async def test_health_answers_head_probes(client):
    response = await client.head("/health")
    assert response.status_code == 200
    assert response.content == b""


async def test_unrouted_responses_carry_a_request_id(client):
    response = await client.get("/no/such/path", headers={"X-Request-ID": "trace-404"})
    assert response.status_code == 404
    assert response.headers["x-request-id"] == "trace-404"
    assert response.headers["content-type"].startswith("application/problem+json")
    generated = await client.get("/no/such/path")
    assert len(generated.headers["x-request-id"]) == 32
