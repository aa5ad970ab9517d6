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
