"""API keys: X-API-Key required once a key exists; the `python -m app.api_keys` CLI."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator

import msgspec
import pytest
from sqlalchemy import text

from app import middleware
from app.api_keys import create_key, main
from app.config import get_settings
from app.db import transaction
from app.middleware import key_ring
from tests.factories import count_rows, problem, shift_task_en
from tests.support import ROOT


async def _forget_keys() -> None:
    async with transaction() as session:
        await session.execute(text("DELETE FROM api_keys"))
    key_ring.invalidate()


@pytest.fixture
async def api_key() -> AsyncIterator[str]:
    """A stored key; removed afterwards so the rest of the suite runs open again."""
    async with transaction() as session:
        _, key = await create_key(session, "tests")
    key_ring.invalidate()
    yield key
    await _forget_keys()


async def test_open_when_no_key_is_configured(client):
    assert (await client.get("/api/v1/batches")).status_code == 200


async def test_missing_key_is_401_problem(client, api_key):
    response = await client.get("/api/v1/batches")
    body = problem(response, 401)
    assert body["detail"] == "A valid X-API-Key header is required"
    assert "X-API-Key" in response.headers["www-authenticate"]


async def test_wrong_key_is_401_and_nothing_written(client, api_key):
    response = await client.post(
        "/api/v1/batches", json=[shift_task_en()], headers={"X-API-Key": api_key + "x"}
    )
    assert problem(response, 401)["detail"] == "The X-API-Key is not valid"
    assert await count_rows("batches") == 0


async def test_valid_key_is_accepted(client, api_key):
    headers = {"X-API-Key": api_key}
    assert (await client.get("/api/v1/batches", headers=headers)).status_code == 200
    response = await client.post("/api/v1/batches", json=[shift_task_en()], headers=headers)
    assert response.status_code == 201, response.text


@pytest.mark.parametrize("path", ["/health", "/ready", "/schema/openapi.json", "/docs"])
async def test_health_and_docs_stay_open(client, api_key, path):
    assert (await client.get(path)).status_code in (200, 503)


async def test_revoked_key_is_refused(client, api_key):
    async with transaction() as session:
        await session.execute(text("UPDATE api_keys SET revoked_at = now()"))
    key_ring.invalidate()
    # With every key revoked the api is open again (development mode), so keep one other key.
    async with transaction() as session:
        await create_key(session, "other")
    key_ring.invalidate()
    problem(await client.get("/api/v1/batches", headers={"X-API-Key": api_key}), 401)


@pytest.fixture
def settings_with(monkeypatch: pytest.MonkeyPatch):
    """Run the auth middleware with changed settings (API_KEYS, ALLOW_ANONYMOUS)."""

    def apply(**changes: object) -> None:
        changed = msgspec.structs.replace(get_settings(), **changes)
        monkeypatch.setattr(middleware, "get_settings", lambda: changed)
        key_ring.invalidate()

    yield apply
    monkeypatch.undo()
    key_ring.invalidate()


async def test_keys_from_the_environment(client, settings_with):
    settings_with(api_keys=" first-key , second-key ")
    problem(await client.get("/api/v1/batches"), 401)
    response = await client.get("/api/v1/batches", headers={"X-API-Key": "second-key"})
    assert response.status_code == 200


async def test_closed_without_keys_when_anonymous_access_is_off(client, settings_with):
    settings_with(allow_anonymous=False)
    problem(await client.get("/api/v1/batches"), 401)
    assert (await client.get("/health")).status_code == 200


def _cli_process(*args: str) -> subprocess.CompletedProcess[str]:
    """The real entry point `make api-key` runs."""
    return subprocess.run(
        [sys.executable, "-m", "app.api_keys", *args],
        cwd=ROOT,
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """The same CLI in this process (its own event loop in a thread): no interpreter start-up."""
    capsys.readouterr()
    try:
        code = await asyncio.to_thread(main, list(args))
    except SystemExit as exc:  # argparse refusing the arguments
        code = int(exc.code or 0)
    return code, capsys.readouterr().out


async def test_cli_create_list_revoke(client, capsys):
    try:
        created = _cli_process("create", "1c-exchange")
        assert created.returncode == 0, created.stderr
        key = created.stdout.strip().splitlines()[-1]
        assert key.startswith("pc_")
        assert len(key) > 32
        async with transaction() as session:
            stored = (await session.execute(text("SELECT id, key_hash FROM api_keys"))).one()
        assert stored.key_hash == hashlib.sha256(key.encode()).hexdigest()
        key_ring.invalidate()
        assert (await client.get("/api/v1/batches", headers={"X-API-Key": key})).status_code == 200
        problem(await client.get("/api/v1/batches"), 401)

        code, listed = await _cli(capsys, "list")
        assert code == 0
        assert "1c-exchange\t" in listed
        assert "active" in listed
        assert key not in listed

        await _cli(capsys, "create", "spare")  # keeps the api closed once the first is revoked
        code, out = await _cli(capsys, "revoke", str(stored.id))
        assert (code, out.strip()) == (0, f"Revoked API key {stored.id} (1c-exchange)")
        assert "revoked" in (await _cli(capsys, "list"))[1]
        key_ring.invalidate()
        problem(await client.get("/api/v1/batches", headers={"X-API-Key": key}), 401)

        assert (await _cli(capsys, "revoke", "999"))[0] == 1
        assert (await _cli(capsys, "create", " "))[0] != 0
    finally:
        await _forget_keys()
