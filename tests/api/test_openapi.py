"""The served OpenAPI document against the running app: what it states is what is served."""

from __future__ import annotations

import re
from typing import Any

METHODS = ("get", "put", "post", "delete", "patch")
TASK_ID = "0b7f2c1e-6a0d-4d5e-9d3a-2f4c8e1a7b90"


async def _document(client: Any) -> dict[str, Any]:
    response = await client.get("/schema/openapi.json")
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document


def _concrete(path: str) -> str:
    return re.sub(r"\{[a-z_]+\}", "1", path.replace("{task_id}", TASK_ID))


async def test_the_served_document_declares_the_api_key(client):
    document = await _document(client)
    assert document["components"]["securitySchemes"]["ApiKeyAuth"]["name"] == "X-API-Key"
    assert document["paths"]["/api/v1/batches"]["get"]["security"] == [{"ApiKeyAuth": []}]
    # Both docs pages render that same document (Swagger UI then shows Authorize).
    for page in ("/docs", "/schema/swagger"):
        assert '"securitySchemes"' in (await client.get(page)).text, page


async def test_options_allows_exactly_the_documented_methods(client):
    document = await _document(client)
    checked = 0
    for path, item in document["paths"].items():
        documented = {m.upper() for m in METHODS if m in item}
        url = _concrete(path)
        response = await client.options(url)
        assert response.status_code == 204, (path, response.status_code, response.text)
        allowed = {m.strip() for m in response.headers["allow"].split(",")}
        assert allowed - {"OPTIONS", "HEAD"} == documented, (path, allowed, documented)
        assert "OPTIONS" in allowed, path
        if "HEAD" in allowed:
            assert (await client.head(url)).status_code != 405, path
        checked += 1
    assert checked >= 30


def _example(document: dict[str, Any], method: str, path: str, status: int) -> dict[str, Any]:
    responses = document["paths"][path][method]["responses"]
    example: dict[str, Any] = responses[str(status)]["content"]["application/problem+json"][
        "example"
    ]
    return example


async def test_problem_examples_are_what_the_service_answers(client):
    document = await _document(client)
    batch = "/api/v1/batches/{batch_id}"
    task = "/api/v1/tasks/{task_id}"
    cases = [
        ("get", batch, "/api/v1/batches/2147483648", None, 422),
        ("get", task, "/api/v1/tasks/not-a-uuid", None, 422),
        ("get", batch, "/api/v1/batches/7", None, 404),
        ("get", "/api/v1/webhooks/{webhook_id}", "/api/v1/webhooks/3", None, 404),
        ("get", task, f"/api/v1/tasks/{TASK_ID}", None, 404),
        (
            "post",
            "/api/v1/batches",
            "/api/v1/batches",
            b'[{"\xd0\xa1\xd0\xbc\xd0\xb5\xd0\xbd\xd0\xb0": 1}]',
            422,
        ),
        ("post", "/api/v1/webhooks", "/api/v1/webhooks", b'{"url": 1} []', 422),
    ]
    for method, path, url, body, status in cases:
        if body is None:
            response = await client.request(method.upper(), url)
        else:
            headers = {"Content-Type": "application/json"}
            response = await client.request(method.upper(), url, content=body, headers=headers)
        assert response.status_code == status, (url, response.text)
        assert response.json() == _example(document, method, path, status), url
    media = await client.post(
        "/api/v1/webhooks", content=b"url=x", headers={"Content-Type": "text/plain"}
    )
    assert media.json() == _example(document, "post", "/api/v1/webhooks", 415)
