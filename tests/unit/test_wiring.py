"""Static wiring: what each process runs is composed in app/wiring.py and nowhere else."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import workers.actors
from app import wiring
from app.broker import broker
from app.config import load_settings
from app.errors import loc_from_msgspec
from app.schedule.plan import SCHEDULE
from app.tasks.kinds import QUEUES, TASK_QUEUES
from app.webhooks.service import fan_out

ROOT = Path(__file__).resolve().parents[2]
PROCESS_CODE = ("app", "workers", "scheduler", "bench")


def _load_actor_modules() -> None:
    for module in wiring.ACTOR_MODULES:
        importlib.import_module(module)


def test_every_actor_module_is_wired():
    found = {f"workers.actors.{m.name}" for m in pkgutil.iter_modules(workers.actors.__path__)}
    assert set(wiring.ACTOR_MODULES) == found


def test_every_task_kind_has_one_actor_on_its_queue_and_every_actor_a_kind():
    _load_actor_modules()
    assert set(broker.actors) == set(TASK_QUEUES), "kind without actor, or actor without kind"
    for name in broker.actors:
        assert broker.get_actor(name).queue_name == TASK_QUEUES[name]
    assert set(TASK_QUEUES.values()) <= set(QUEUES)


def test_every_scheduled_job_is_a_task_kind():
    for job in SCHEDULE:
        assert job.name in TASK_QUEUES


def test_the_relay_runs_the_webhook_fan_out():
    assert fan_out in wiring.EVENT_HANDLERS
    assert wiring.outbox_relay().event_handlers == wiring.EVENT_HANDLERS


def _calls_of(name: str) -> list[str]:
    """Where process code calls `name(...)` directly."""
    places = []
    for folder in PROCESS_CODE:
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Call) and getattr(node.func, "id", None) == name:
                    places.append(str(path.relative_to(ROOT)))
    return places


def test_every_process_builds_its_relay_through_the_wiring():
    """A relay built elsewhere could run other handlers than the rest (and lose events)."""
    assert _calls_of("OutboxRelay") == ["app/wiring.py"]


def test_no_package_registers_anything_on_import():
    """Package __init__ files hold a docstring at most: wiring happens in app/wiring.py."""
    for folder in ("app", "workers", "scheduler"):
        for init in (ROOT / folder).rglob("__init__.py"):
            body = ast.parse(init.read_text()).body
            statements = [node for node in body if not isinstance(node, ast.Expr)]
            assert not statements, f"{init.relative_to(ROOT)} runs code on import"


def test_split_variables_build_urls():
    settings = load_settings(
        {
            "DB_HOST": "db",
            "DB_PORT": "5433",
            "DB_NAME": "pc",
            "DB_USER": "u",
            "DB_PASSWORD": "p@ss",
            "RABBITMQ_HOST": "mq",
            "RABBITMQ_VHOST": "/",
        }
    )
    assert settings.database_url == "postgresql+asyncpg://u:p%40ss@db:5433/pc"
    assert settings.rabbitmq_url == "amqp://guest:guest@mq:5672/%2F"


def test_explicit_urls_win_over_split_variables():
    settings = load_settings({"DATABASE_URL": "postgresql+asyncpg://x@h/d", "DB_HOST": "db"})
    assert settings.database_url == "postgresql+asyncpg://x@h/d"


def test_msgspec_paths_become_loc():
    assert loc_from_msgspec("Expected `int`, got `str` - at `$[3].НомерПартии`") == (
        ["body", 3, "НомерПартии"],
        "Expected `int`, got `str`",
    )
    assert loc_from_msgspec("Object contains unknown field `x` - at `$[0]`")[0] == ["body", 0, "x"]


def _imported_modules(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
    return modules


def test_no_layer_reaches_up():
    """workers/ and scheduler/ are built on app/, never the reverse (the broker, the schedule
    and the leader lock included): the api loads no worker or scheduler code."""
    for path in (ROOT / "app").rglob("*.py"):
        upward = {m for m in _imported_modules(path) if m.split(".")[0] in ("workers", "scheduler")}
        assert not upward, f"{path.relative_to(ROOT)} imports {sorted(upward)}"


def test_every_event_is_a_webhook_event_in_the_openapi_schema():
    """A new EVENTS entry is subscribable and documented (the WebhookEvent enum)."""
    from app.main import create_app
    from app.outbox import EVENTS

    schema = create_app().openapi_schema.to_schema()
    enums = [
        set(component.get("enum", ()))
        for component in _walk(schema)
        if isinstance(component, dict) and "enum" in component
    ]
    assert any(set(EVENTS) <= values for values in enums)


def test_every_route_is_in_the_openapi_schema():
    from app.main import create_app

    app = create_app()
    documented = set(app.openapi_schema.to_schema()["paths"])
    hidden = {"/docs", "/docs/{path:path}", "/metrics", "/schema", "/swagger"}
    for route in app.routes:
        path = route.path.replace(":str", "").replace(":int", "")
        if path in hidden or any(path.startswith(h.rstrip("/") + "/") for h in hidden):
            continue
        assert path in documented, f"{route.path} is not in the OpenAPI schema"


def _walk(node: object) -> list[object]:
    found: list[object] = [node]
    if isinstance(node, dict):
        for value in node.values():
            found.extend(_walk(value))
    elif isinstance(node, list):
        for value in node:
            found.extend(_walk(value))
    return found
