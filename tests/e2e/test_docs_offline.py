"""The docs pages render in a real browser that can reach nothing but this machine.

Headless Chromium opens /docs and /schema/swagger served by a real api process, with every
host but 127.0.0.1 unresolvable. Its network log shows every request the page made; the
rendered DOM shows the operations, which exist only once Swagger UI's script has run.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.e2e.test_cache_two_apis import ApiProcess

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def api_url() -> Iterator[str]:
    api = ApiProcess().start()
    try:
        api.wait_listening()
        yield api.url
    finally:
        api.stop()


def render_offline(url: str, net_log: Path) -> str:
    """The DOM after the page's scripts ran, with only loopback reachable."""
    assert CHROMIUM is not None
    completed = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--disable-gpu",
            "--no-sandbox",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            # Every host name fails to resolve except the api's address: no CDN, no internet.
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            f"--log-net-log={net_log}",
            "--virtual-time-budget=15000",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr.decode(errors="replace")[-3000:]
    return completed.stdout.decode()


def page_requests(net_log: Path, page_url: str) -> list[str]:
    """URLs of every request the page (not the browser itself) started.

    A page's requests carry its site (scheme and host, no port) in their network isolation
    key; the browser's own background requests (component updates and the like) do not.
    """
    parts = urlsplit(page_url)
    site = f"{parts.scheme}://{parts.hostname}"
    log = json.loads(net_log.read_text())
    start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    return [
        event["params"]["url"]
        for event in log["events"]
        if event["type"] == start_job
        and site in event.get("params", {}).get("network_isolation_key", "")
    ]


@pytest.mark.parametrize("page", ["/docs", "/schema/swagger"])
def test_docs_render_every_operation_with_no_request_leaving_the_machine(
    api_url: str, page: str, tmp_path: Path
) -> None:
    if CHROMIUM is None:
        message = (
            "!!! chromium is not installed: the offline docs test did NOT run "
            "(apt-get install chromium; .ci/run installs it) !!!"
        )
        print(message, file=sys.stderr)
        pytest.skip(message)
    net_log = tmp_path / "net-log.json"
    dom = render_offline(api_url + page, net_log)

    requests = page_requests(net_log, api_url)
    assert any(url.endswith("/docs/assets/swagger-ui-bundle.js") for url in requests), requests
    outside = [url for url in requests if urlsplit(url).hostname != "127.0.0.1"]
    assert outside == [], f"the docs page reached out of the machine: {outside}"

    # Rendered by Swagger UI (the raw page has only the JSON spec, no such elements).
    assert 'class="opblock-summary-path" data-path="/api/v1/batches"' in dom, dom[-2000:]
    assert 'data-path="/api/v1/batches/{batch_id}/aggregate-async"' in dom
    assert 'data-path="/api/v1/tasks/{task_id}"' in dom
    assert "Ingest shift tasks from 1C" in dom  # an operation summary
    # The X-API-Key security scheme of the document gives the page its Authorize button.
    assert 'class="btn authorize' in dom
    assert dom.count('class="opblock-summary-method"') >= 25
