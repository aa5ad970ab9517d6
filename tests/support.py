"""Test infrastructure: a throwaway database and RabbitMQ vhost, and real worker processes.

A developer's data is never touched: the suite runs against its own database
(TEST_DATABASE_NAME, default `production_control_test`, dropped and re-created) and its own
RabbitMQ vhost (TEST_RABBITMQ_VHOST), so two suites can run side by side.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import xmlrpc.client
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg
from supervisor.xmlrpc import SupervisorTransport

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
        # Worker metrics exporters off: suites running side by side would fight over ports.
        "WORKER_METRICS_PORT_FAST": "0",
        "WORKER_METRICS_PORT_HEAVY": "0",
        "WORKER_METRICS_PORT_WEBHOOKS": "0",
    }


async def _recreate_database(name: str) -> None:
    admin = await asyncpg.connect(
        _with_path(BASE_DATABASE_URL, "/postgres").replace("postgresql+asyncpg://", "postgresql://")
    )
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
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


def prepare_database(name: str = TEST_DATABASE) -> None:
    """Drop and re-create the database `name`, migrated to the latest schema."""
    from alembic import command
    from alembic.config import Config

    asyncio.run(_recreate_database(name))
    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["database_url"] = _with_path(BASE_DATABASE_URL, "/" + name)
    command.upgrade(config, "heads")


def prepare_vhost(name: str = TEST_VHOST) -> None:
    """A fresh vhost (no stale queues from an earlier run); needs rabbitmqctl on this machine."""
    ctl = shutil.which("rabbitmqctl")
    if ctl is None:
        raise RuntimeError("rabbitmqctl not found: the tests create their own RabbitMQ vhost")
    user = urlsplit(BASE_RABBITMQ_URL).username or "guest"
    subprocess.run([ctl, "-q", "delete_vhost", name], capture_output=True, check=False)
    subprocess.run([ctl, "-q", "add_vhost", name], capture_output=True, check=True)
    subprocess.run(
        [ctl, "-q", "set_permissions", "-p", name, user, ".*", ".*", ".*"],
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


def isolated_environment(suffix: str) -> dict[str, str]:
    """A fresh database and vhost of their own, for processes that must not share state with
    the in-process app of the test run (its outbox relay would do their work and hide a
    process that does not)."""
    return fresh_environment(f"{TEST_DATABASE}_{suffix}", f"{TEST_VHOST}_{suffix}")


def fresh_environment(database: str, vhost: str) -> dict[str, str]:
    """The test settings on the database and vhost named, both (re-)created empty."""
    prepare_database(database)
    prepare_vhost(vhost)
    return {
        **test_environment(),
        "DATABASE_URL": _with_path(BASE_DATABASE_URL, "/" + database),
        "RABBITMQ_URL": _with_path(BASE_RABBITMQ_URL, "/" + quote(vhost, safe="")),
    }


def asyncpg_url(environment: dict[str, str]) -> str:
    return environment["DATABASE_URL"].replace("postgresql+asyncpg://", "postgresql://")


def _die_with_parent() -> None:
    """SIGTERM the worker group if the test run itself dies (no orphaned consumers)."""
    import ctypes
    import signal

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class WorkerGroup:
    """Real `python -m workers` processes against the test database and vhost."""

    def __init__(
        self,
        queues: list[str],
        extra_env: dict[str, str] | None = None,
        output: Path | None = None,
    ) -> None:
        self.queues = queues
        self.env = {**os.environ, **test_environment(), **(extra_env or {})}
        self.output = output  # the processes' stdout and stderr, else the test run's
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerGroup:
        with contextlib.ExitStack() as stack:
            sink = stack.enter_context(self.output.open("wb")) if self.output else None
            self.process = subprocess.Popen(
                [sys.executable, "-m", "workers", "--queues", *self.queues],
                cwd=ROOT,
                env=self.env,
                start_new_session=True,
                preexec_fn=_die_with_parent,
                stdout=sink,
                stderr=subprocess.STDOUT if sink else None,
            )
        time.sleep(0.5)
        return self

    def kill(self) -> None:
        """SIGKILL the whole group: what a crashed host looks like."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, 9)
            self.process.wait()

    def terminate(self) -> None:
        """SIGTERM without waiting: an orderly stop (deploy, supervisor).

        The leader alone: it passes SIGTERM on to dramatiq's processes, and a second
        SIGTERM (the whole group's) would make them abandon their messages.
        """
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        """An orderly stop, SIGKILL if it takes more than 20 s."""
        if self.process and self.process.poll() is None:
            self.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_until(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout} s")
        time.sleep(0.2)


def is_alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def child_pids(pid: int) -> list[int]:
    """Direct children of `pid`, read from /proc."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # exited while we looked
            continue
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return children


class Stack:
    """Every process of `make run`, started as `make run` starts them (python -m ops.supervise:
    supervisord with ops/supervisord.conf), against the test database, vhost and S3 endpoint
    (an external S3, so no s3 program), on a free API port with its own run directory.

    supervisord's output (its own log and every program's) goes to `log_path`.
    """

    def __init__(
        self, extra_env: dict[str, str] | None = None, run_dir: Path | None = None
    ) -> None:
        self.run_dir = run_dir or Path(tempfile.mkdtemp(prefix="pc-stack-"))
        self.log_path = self.run_dir / "supervisord.log"
        self.api_port = free_port()
        self.base_url = f"http://127.0.0.1:{self.api_port}"
        replicas = int((extra_env or {}).get("API_REPLICAS", "1"))
        self.api_urls = [f"http://127.0.0.1:{self.api_port + n}" for n in range(replicas)]
        self.env = {
            **os.environ,
            **test_environment(),
            "API_PORT": str(self.api_port),
            "PC_RUN_DIR": str(self.run_dir),
            **(extra_env or {}),
        }
        if not self.env.get("S3_ENDPOINT_URL"):
            raise RuntimeError("Stack needs the test S3 endpoint (local_s3_environment())")
        self.process: subprocess.Popen[bytes] | None = None
        self.rpc: Any = xmlrpc.client.ServerProxy(
            "http://127.0.0.1",
            transport=SupervisorTransport(None, None, f"unix://{self.run_dir}/supervisor.sock"),
        )

    def start(self, timeout: float = 60.0) -> Stack:
        # Append mode: supervisord re-opens its stdout (/dev/stdout) once per program, and
        # all those writers must add to the end rather than overwrite each other.
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "ops.supervise"],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # like a terminal: supervisord leads its own group
                preexec_fn=_die_with_parent,
            )
        deadline = time.monotonic() + timeout
        while not (all(self.healthy(url) for url in self.api_urls) and self.all_running()):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the stack did not come up:\n{self.log()[-4000:]}")
            time.sleep(0.3)
        return self

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Wait until /health answers (a restarted api is RUNNING before it listens)."""
        deadline = time.monotonic() + timeout
        while not self.healthy():
            if time.monotonic() > deadline:
                raise AssertionError(f"/health does not answer:\n{self.log()[-4000:]}")
            time.sleep(0.2)

    def healthy(self, url: str | None = None) -> bool:
        try:
            with urllib.request.urlopen(f"{url or self.base_url}/health", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def info(self, program: str) -> dict[str, Any]:
        """supervisord's view of a program: statename, pid, ... (XML-RPC over the socket)."""
        info: dict[str, Any] = self.rpc.supervisor.getProcessInfo(program)
        return info

    def pid(self, program: str) -> int:
        return int(self.info(program)["pid"])

    def programs(self) -> list[str]:
        """Every program supervisord runs, as `group:name` (`api:api`, `workers:heavy`)."""
        infos = self.rpc.supervisor.getAllProcessInfo()
        return [f"{info['group']}:{info['name']}" for info in infos]

    def all_running(self) -> bool:
        try:
            infos = self.rpc.supervisor.getAllProcessInfo()
        except OSError:  # the socket is not there yet
            return False
        return bool(infos) and all(info["statename"] == "RUNNING" for info in infos)

    def wait_restarted(self, program: str, old_pid: int, timeout: float = 60.0) -> int:
        """Wait until `program` runs again under a new pid; returns that pid."""
        deadline = time.monotonic() + timeout
        info = self.info(program)
        while not (info["statename"] == "RUNNING" and info["pid"] != old_pid):
            if time.monotonic() > deadline:
                raise AssertionError(f"{program} not restarted: {info}\n{self.log()[-4000:]}")
            time.sleep(0.2)
            info = self.info(program)
        return int(info["pid"])

    def stop(
        self, signum: int = signal.SIGTERM, whole_group: bool = False, timeout: float = 60.0
    ) -> int:
        """Stop supervisord as a terminal or a service manager would; returns its exit code.

        whole_group: the signal goes to supervisord's process group, as Ctrl-C does.
        """
        assert self.process is not None
        if self.process.poll() is None:
            if whole_group:
                os.killpg(self.process.pid, signum)
            else:
                self.process.send_signal(signum)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._kill_everything()
            raise

    def _kill_everything(self) -> None:
        """Test clean-up after a failed stop: the programs lead process groups of their own."""
        assert self.process is not None
        with contextlib.suppress(OSError, xmlrpc.client.Fault):
            for program in self.programs():
                with contextlib.suppress(OSError, xmlrpc.client.Fault):
                    os.killpg(self.pid(program), signal.SIGKILL)
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def cleanup(self) -> None:
        if self.process and self.process.poll() is None:
            self.stop()
        shutil.rmtree(self.run_dir, ignore_errors=True)


LISTENING = re.compile(r"Uvicorn running on http://127\.0\.0\.1:(\d+)")


class ApiProcess:
    """`python -m app` on an ephemeral port (read back from uvicorn's start-up line)."""

    def __init__(self, extra_env: dict[str, str] | None = None) -> None:
        self.log = Path(tempfile.mkstemp(prefix="api-", suffix=".log")[1])
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.extra_env = extra_env or {}

    def start(self) -> ApiProcess:
        env = {
            **os.environ,
            **test_environment(),
            "API_HOST": "127.0.0.1",
            "API_PORT": "0",
            "LOG_LEVEL": "INFO",  # uvicorn's start-up line carries the port
            **self.extra_env,
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
