"""Schemathesis over the whole OpenAPI document against a real api process (uvicorn).

Every operation and every built-in check (server errors, status codes, content types,
response schemas and headers, Allow headers, positive and negative data), the examples,
coverage and fuzzing phases, a fixed seed and bounded examples. Any finding fails the suite
and is fixed in the service. The one exception is KNOWN_GAPS: findings the document cannot
express yet, each named with its reason, so they stay visible instead of silently allowed.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import Status, events, from_schema

from tests.support import ApiProcess

SEED = 20260130
MAX_EXAMPLES = 5
# The api runs with a key, as in production: every operation the document marks as needing
# X-API-Key is probed without it and with a wrong one (schemathesis' ignored_auth check).
API_KEY = "pc_contract-test-key"

_SYNONYMS = (
    "1C synonym keys: one of two keys is required and both at once is a 422, and "
    "shift_end >= shift_start; the document states neither"
)
# (operation, check) -> why it is not fixed yet.
KNOWN_GAPS = {
    ("POST /api/v1/batches", "positive_data_acceptance"): _SYNONYMS,
    ("PATCH /api/v1/batches/{batch_id}", "positive_data_acceptance"): _SYNONYMS,
    ("POST /api/v1/products", "positive_data_acceptance"): _SYNONYMS,
    ("POST /api/v1/batches/import", "positive_data_acceptance"): (
        "the file's content (a real xlsx/csv) cannot be described in the document"
    ),
    ("POST /api/v1/notifications/test", "positive_data_acceptance"): (
        "the email pattern admits control characters the SMTP address check refuses"
    ),
    ("POST /api/v1/batches/{batch_id}/reports", "positive_data_acceptance"): (
        "the email pattern admits control characters the SMTP address check refuses"
    ),
    ("PATCH /api/v1/webhooks/{webhook_id}", "positive_data_acceptance"): (
        "URL rules beyond the pattern (valid port, host) are checked in code"
    ),
    ("POST /api/v1/webhooks", "positive_data_acceptance"): (
        "URL rules beyond the pattern (valid port, host) are checked in code"
    ),
    ("POST /api/v1/webhooks", "negative_data_rejection"): (
        "lax decoding takes 0/1 for booleans, as FastAPI's lax mode does"
    ),
    ("PATCH /api/v1/webhooks/{webhook_id}", "negative_data_rejection"): (
        "lax decoding takes 0/1 for booleans, as FastAPI's lax mode does"
    ),
    ("POST /api/v1/batches/export", "negative_data_rejection"): (
        "lax decoding takes 0/1 for booleans, as FastAPI's lax mode does"
    ),
}


@pytest.fixture(scope="module")
def api_server() -> Iterator[ApiProcess]:
    # Idempotency-Keys forgotten at once: the phases send the same boundary values as keys
    # to every operation, and a key remembered from another request is rightly a 422, a rule
    # of state no schema can state (tests/api/test_idempotency.py covers it). The header's
    # own format is still checked.
    api = ApiProcess({"IDEMPOTENCY_TTL": "0", "API_KEYS": API_KEY}).start()
    try:
        api.wait_listening()
        yield api
    finally:
        api.stop()


def test_api_contract(api_server: ApiProcess) -> None:
    config = SchemathesisConfig.from_dict(
        {
            "seed": SEED,
            "auth": {"openapi": {"ApiKeyAuth": {"api_key": API_KEY}}},
            "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True},
            "request-timeout": 20,
            # No workers run here: a task's SSE stream stays open until its first events
            # are read, so stop there instead of at the request timeout.
            "max-stream-events": 1,
            # The stateful phase chains operations for minutes; every operation is already
            # covered one by one.
            "phases": {"stateful": {"enabled": False}},
            # A 400 is a business rule on the data's state (a closed batch, a code already
            # aggregated), never a schema check: validation is a 422. The examples create
            # real batches and other operations close them, so valid data can meet one.
            "checks": {
                "positive_data_acceptance": {
                    "expected-statuses": [
                        "2xx",
                        "3xx",
                        "400",
                        "401",
                        "403",
                        "404",
                        "409",
                        "429",
                        "5xx",
                    ]
                }
            },
        }
    )
    schema = schemathesis.openapi.from_url(f"{api_server.url}/schema/openapi.json", config=config)
    findings: list[str] = []
    known: set[tuple[str, str]] = set()
    operations: set[str] = set()
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            operations.add(event.recorder.label)
            for checks in event.recorder.checks.values():
                for check in checks:
                    if check.status != Status.FAILURE or check.failure_info is None:
                        continue
                    if (event.recorder.label, check.name) in KNOWN_GAPS:
                        known.add((event.recorder.label, check.name))
                        continue
                    failure = check.failure_info.failure
                    findings.append(
                        f"[{event.phase}] {event.recorder.label} {check.name}: {failure.title}"
                        f"\n{failure.message}\n{check.failure_info.code_sample}"
                    )
        elif isinstance(event, events.NonFatalError | events.FatalError):
            findings.append(f"error: {event}")
        elif isinstance(event, events.EngineFinished):
            findings.extend(f"after the run: {f.title}: {f.message}" for f in event.failures)
    documented = {result.ok().label for result in schema.get_all_operations()}
    assert len(documented) >= 30
    assert operations >= documented, f"not run: {documented - operations}"
    assert not findings, "\n\n".join(findings)
    for gap in sorted(known):
        print(f"known gap {gap}: {KNOWN_GAPS[gap]}")
