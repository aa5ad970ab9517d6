"""Static wiring: names the api enqueues by and the actors the workers declare stay in step."""

from __future__ import annotations

import workers.actors  # noqa: F401  (registers every actor)
from app.config import load_settings
from app.errors import loc_from_msgspec
from app.tasks.kinds import QUEUES, TASK_QUEUES
from scheduler.jobs import SCHEDULE
from workers.broker import broker


def test_every_declared_actor_listens_on_its_kinds_queue():
    for name in broker.actors:
        assert name in TASK_QUEUES, f"actor {name} missing from TASK_QUEUES"
        assert broker.get_actor(name).queue_name == TASK_QUEUES[name]
    assert set(TASK_QUEUES.values()) <= set(QUEUES)


def test_every_scheduled_job_is_a_task_kind():
    for job in SCHEDULE:
        assert job.name in TASK_QUEUES


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
