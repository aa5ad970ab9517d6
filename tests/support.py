"""Test infrastructure: a throwaway database and RabbitMQ vhost, and real worker processes.

A developer's data is never touched: the suite runs against its own database
(TEST_DATABASE_NAME, default `production_control_test`, dropped and re-created) and its own
RabbitMQ vhost (TEST_RABBITMQ_VHOST), so two suites can run side by side.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg

ROOT = Path(__file__).resolve().parent.parent

BASE_DATABASE_URL = os.environ.get("DATABASE_URL", "postgresql+asyncpg://root@127.0.0.1:5432/root")
BASE_RABBITMQ_URL = os.environ.get("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")
TEST_DATABASE = os.environ.get("TEST_DATABASE_NAME", "production_control_test")
TEST_VHOST = os.environ.get("TEST_RABBITMQ_VHOST", "production_control_test")


def _with_path(url: str, path: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, parts.fragment))


TEST_DATABASE_URL = _with_path(BASE_DATABASE_URL, "/" + TEST_DATABASE)
TEST_RABBITMQ_URL = _with_path(BASE_RABBITMQ_URL, "/" + quote(TEST_VHOST, safe=""))


def test_environment() -> dict[str, str]:
    return {
        "DATABASE_URL": TEST_DATABASE_URL,
        "RABBITMQ_URL": TEST_RABBITMQ_URL,
        "LOG_LEVEL": os.environ.get("TEST_LOG_LEVEL", "WARNING"),
        "LOG_FORMAT": "console",
        "WEBHOOK_ALLOW_PRIVATE": "true",
        "API_KEYS": "",
        "ALLOW_ANONYMOUS": "true",
        "TASK_STALE_AFTER": "6",
    }


async def _recreate_database() -> None:
    admin = await asyncpg.connect(
        _with_path(BASE_DATABASE_URL, "/postgres").replace("postgresql+asyncpg://", "postgresql://")
    )
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{TEST_DATABASE}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{TEST_DATABASE}"')
    finally:
        await admin.close()


def local_s3_environment() -> dict[str, str]:
    """A real S3 endpoint: moto's server in this process on a free port (workers reach it
    over HTTP like any S3), or TEST_S3_ENDPOINT_URL (e.g. MinIO) when set."""
    endpoint = os.environ.get("TEST_S3_ENDPOINT_URL")
    if not endpoint:
        import logging
        import socket

        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per S3 request
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False).start()
        endpoint = f"http://127.0.0.1:{port}"
    return {
        "S3_ENDPOINT_URL": endpoint,
        "S3_PUBLIC_ENDPOINT_URL": "",
        "S3_ACCESS_KEY": os.environ.get("TEST_S3_ACCESS_KEY", "testing"),
        "S3_SECRET_KEY": os.environ.get("TEST_S3_SECRET_KEY", "testing-secret"),
        "S3_REGION": "us-east-1",
    }


def prepare_database() -> None:
    from alembic import command
    from alembic.config import Config

    asyncio.run(_recreate_database())
    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["database_url"] = TEST_DATABASE_URL
    command.upgrade(config, "heads")


def prepare_vhost() -> None:
    """A fresh vhost (no stale queues from an earlier run); needs rabbitmqctl on this machine."""
    ctl = shutil.which("rabbitmqctl")
    if ctl is None:
        raise RuntimeError("rabbitmqctl not found: the tests create their own RabbitMQ vhost")
    user = urlsplit(BASE_RABBITMQ_URL).username or "guest"
    subprocess.run([ctl, "-q", "delete_vhost", TEST_VHOST], capture_output=True, check=False)
    subprocess.run([ctl, "-q", "add_vhost", TEST_VHOST], capture_output=True, check=True)
    subprocess.run(
        [ctl, "-q", "set_permissions", "-p", TEST_VHOST, user, ".*", ".*", ".*"],
        capture_output=True,
        check=True,
    )


def queue_consumers(queue: str) -> int:
    """How many consumers RabbitMQ has on `queue` in the test vhost (one per worker process)."""
    listed = subprocess.run(
        ["rabbitmqctl", "-q", "list_queues", "-p", TEST_VHOST, "name", "consumers"],
        capture_output=True,
        check=True,
        text=True,
    ).stdout
    counts = dict(line.split("\t") for line in listed.splitlines() if "\t" in line)
    return int(counts.get(queue, "0"))


def wait_for_consumers(queue: str, count: int, timeout: float = 30.0) -> None:
    """Block until `count` worker processes consume `queue` (their groups have booted)."""
    deadline = time.monotonic() + timeout
    while queue_consumers(queue) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"fewer than {count} consumers on {queue} after {timeout}s")
        time.sleep(0.2)


def _die_with_parent() -> None:
    """SIGTERM the worker group if the test run itself dies (no orphaned consumers)."""
    import ctypes
    import signal

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class WorkerGroup:
    """Real `python -m workers` processes against the test database and vhost."""

    def __init__(self, queues: list[str], extra_env: dict[str, str] | None = None) -> None:
        self.queues = queues
        self.env = {**os.environ, **test_environment(), **(extra_env or {})}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerGroup:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "workers", "--queues", *self.queues],
            cwd=ROOT,
            env=self.env,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        time.sleep(0.5)
        return self

    def kill(self) -> None:
        """SIGKILL the whole group: what a crashed host looks like."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, 9)
            self.process.wait()

    def terminate(self) -> None:
        """SIGTERM the group's leader without waiting: an orderly stop (deploy, supervisor).

        Only the leader: it passes the signal to dramatiq, whose master passes it to each
        worker process, and a worker process that gets a second SIGTERM exits at once.
        """
        if self.process and self.process.poll() is None:
            self.process.send_signal(15)

    def stop(self) -> None:
        """An orderly stop (SIGTERM to the leader), SIGKILL if it takes more than 20 s."""
        if self.process and self.process.poll() is None:
            self.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()
