"""Test infrastructure: a throwaway database and RabbitMQ vhost, and real worker processes.

A developer's data is never touched: the suite runs against its own database
(TEST_DATABASE_NAME, default `production_control_test`, dropped and re-created) and its own
RabbitMQ vhost (TEST_RABBITMQ_VHOST), so two suites can run side by side.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
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

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, 15)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


LISTENING = re.compile(r"Uvicorn running on http://127\.0\.0\.1:(\d+)")


class ApiProcess:
    """`python -m app` on an ephemeral port (read back from uvicorn's start-up line)."""

    def __init__(self) -> None:
        self.log = Path(tempfile.mkstemp(prefix="api-", suffix=".log")[1])
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self) -> ApiProcess:
        env = {
            **os.environ,
            **test_environment(),
            "API_HOST": "127.0.0.1",
            "API_PORT": "0",
            "LOG_LEVEL": "INFO",  # uvicorn's start-up line carries the port
        }
        with self.log.open("wb") as sink:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "app"],
                cwd=ROOT,
                env=env,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def wait_listening(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            assert self.process.poll() is None, self.log.read_text()
            if found := LISTENING.search(self.log.read_text(errors="replace")):
                self.url = f"http://127.0.0.1:{found.group(1)}"
                return
            time.sleep(0.1)
        raise AssertionError(f"api did not start:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.unlink(missing_ok=True)
