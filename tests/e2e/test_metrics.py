"""GET /metrics and the worker groups' metrics ports, with real worker processes; the
Grafana dashboard and the Prometheus config name only what these expose."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from app.config import get_settings, load_settings
from app.tasks.kinds import QUEUES
from tests import support
from tests.conftest import wait_for_task
from tests.factories import add_codes, create_batch

pytestmark = pytest.mark.e2e

DEPLOY = support.ROOT / "deploy"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def parse(exposition: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample's value, 0 when absent; labels not named are ignored (summed over)."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


async def scrape_api(client: Any) -> tuple[str, Samples]:
    response = await client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return response.text, parse(response.text)


@pytest.fixture(scope="module")
def worker_ports() -> Iterator[dict[str, int]]:
    """Every worker group with its metrics exporter on a port of its own."""
    ports = {queue: free_port() for queue in QUEUES}
    group = support.WorkerGroup(
        list(QUEUES),
        extra_env={f"WORKER_METRICS_PORT_{q.upper()}": str(p) for q, p in ports.items()},
    ).start()
    yield ports
    group.stop()


async def scrape_worker(port: int, until: str, timeout: float = 20.0) -> Samples:
    """The group's metrics once `until` is among them (the exporter starts after boot)."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=5) as http:
        while True:
            try:
                response = await http.get(f"http://127.0.0.1:{port}/metrics")
                if until in response.text:
                    return parse(response.text)
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"no {until} on worker port {port}"
            await asyncio.sleep(0.2)


async def run_aggregation(client: Any) -> dict[str, Any]:
    batch = await create_batch(client)
    await add_codes(client, batch["id"], ["M-1", "M-2"])
    response = await client.post(
        f"/api/v1/batches/{batch['id']}/aggregate-async", json={"unique_codes": ["M-1", "M-2"]}
    )
    assert response.status_code == 202, response.text
    task = await wait_for_task(client, response.json()["task_id"])
    assert task["status"] == "SUCCESS", task
    return batch


async def test_http_requests_are_counted_by_route_template(client):
    _, before = await scrape_api(client)
    route = {"method": "GET", "path": "/api/v1/batches/{batch_id}"}
    assert (await client.get("/api/v1/batches/424242")).status_code == 404
    assert (await client.get("/no/such/path/unrouted-4711")).status_code == 404
    text, after = await scrape_api(client)

    assert value(after, "http_requests_total", **route, status_code="404") == (
        value(before, "http_requests_total", **route, status_code="404") + 1
    )
    assert value(after, "http_request_duration_seconds_count", **route) == (
        value(before, "http_request_duration_seconds_count", **route) + 1
    )
    assert "424242" not in text
    assert "unrouted-4711" not in text  # an unknown path adds no series


async def test_tasks_move_in_the_api_and_the_workers(client, worker_ports):
    _, before = await scrape_api(client)
    done = {"kind": "aggregate_products", "status": "SUCCESS"}
    await run_aggregation(client)
    _, after = await scrape_api(client)
    assert value(after, "production_control_tasks", **done) == (
        value(before, "production_control_tasks", **done) + 1
    )
    assert value(after, "production_control_database_up") == 1
    assert value(after, "production_control_broker_up") == 1
    for queue in QUEUES:
        for state in ("ready", "delayed", "dead_letter"):
            assert (
                "production_control_queue_messages",
                frozenset({("queue", queue), ("state", state)}),
            ) in after
    assert value(after, "production_control_outbox_oldest_unpublished_age_seconds") >= 0

    heavy = await scrape_worker(worker_ports["heavy"], "production_control_task_duration_seconds")
    assert value(heavy, "production_control_task_duration_seconds_count", **done) >= 1
    assert (
        value(heavy, "dramatiq_messages_total", queue_name="heavy", actor_name="aggregate_products")
        >= 1
    )


async def test_labels_never_carry_ids_codes_or_credentials(client):
    # user:password@ URLs are refused at the API; a token in the query string is not.
    secret_url = "http://127.0.0.1:9/hook?token=hunter2"
    response = await client.post(
        "/api/v1/webhooks",
        json={"url": secret_url, "events": ["batch_created"], "secret_key": "whsec-x"},
    )
    assert response.status_code == 201, response.text
    batch = await create_batch(client)
    await add_codes(client, batch["id"], ["SECRET-CODE-1"])
    await client.get(f"/api/v1/batches/{batch['id']}")
    text, samples = await scrape_api(client)

    for needle in ("hunter2", "SECRET-CODE-1", "/hook"):
        assert needle not in text
    templates = {route.path_format for route in client.app.routes}
    for name, labels in samples:
        for label, label_value in labels:
            if label == "path":
                assert label_value in templates, (name, label_value)
            assert "://" not in label_value, (name, label_value)
            assert "@" not in label_value, (name, label_value)


async def test_a_metrics_token_is_required_once_set(client, monkeypatch):
    monkeypatch.setenv("METRICS_TOKEN", "scrape-me")
    get_settings.cache_clear()
    try:
        refused = await client.get("/metrics")
        assert refused.status_code == 401
        assert refused.headers["content-type"].startswith("application/problem+json")
        wrong = await client.get("/metrics", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        allowed = await client.get("/metrics", headers={"Authorization": "Bearer scrape-me"})
        assert allowed.status_code == 200
        parse(allowed.text)
    finally:
        monkeypatch.delenv("METRICS_TOKEN")
        get_settings.cache_clear()


def metric_names(expression: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers outside label matchers and
    grouping clauses, that are not functions or aggregations."""
    bare = re.sub(r"\{[^}]*\}", "", expression)
    bare = re.sub(r"\b(?:by|without)\s*\([^)]*\)", "", bare)
    bare = re.sub(r"\[[^\]]*\]", "", bare)
    return set(re.findall(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()", bare))


async def test_dashboard_and_prometheus_config_name_only_exposed_metrics(client, worker_ports):
    await run_aggregation(client)  # the workers' metrics exist once a message was handled
    text, _ = await scrape_api(client)
    exposed = {name for name, _ in parse(text)}
    for queue, port in worker_ports.items():
        # Every group's exporter answers; the one that ran the task has samples.
        until = "dramatiq_messages_total" if queue == "heavy" else ""
        exposed |= {name for name, _ in await scrape_worker(port, until)}

    dashboard = json.loads((DEPLOY / "grafana/dashboards/production-control.json").read_text())
    expressions = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    named = set().union(*(metric_names(e) for e in expressions))
    assert {"http_requests_total", "production_control_queue_messages"} <= named
    # `up` is Prometheus's own series per scrape target.
    assert named - {"up"} <= exposed, sorted(named - {"up"} - exposed)

    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    targets = {
        job["job_name"]: [t for c in job["static_configs"] for t in c["targets"]]
        for job in config["scrape_configs"]
    }
    defaults = load_settings({})
    assert targets["api"] == [f"api:{defaults.api_port}"]
    assert sorted(targets["workers"]) == sorted(
        f"worker-{q}:{getattr(defaults, f'worker_metrics_port_{q}')}" for q in QUEUES
    )
    # The config names no metric itself (no rules or relabelling): its targets are the check.
    assert "rule_files" not in config


def compose_command() -> list[str] | None:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    docker = shutil.which("docker")
    if (
        docker
        and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0
    ):
        return [docker, "compose"]
    return None


def test_compose_parses_with_the_monitoring_profile():
    compose = support.ROOT / "compose.yaml"
    services = yaml.safe_load(compose.read_text())["services"]
    for name in ("prometheus", "grafana"):
        assert services[name]["profiles"] == ["monitoring"]
        for volume in services[name]["volumes"]:
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (support.ROOT / source).exists(), source
    command = compose_command()
    if command is None:
        pytest.skip(
            "!!! neither docker-compose nor `docker compose`: compose.yaml was only "
            "checked as YAML, not by compose itself !!!"
        )
    completed = subprocess.run(
        [
            *command,
            "-f",
            str(compose),
            "--profile",
            "app",
            "--profile",
            "monitoring",
            "config",
            "-q",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
