"""A real stack for benchmarks: own database and vhost, the api under uvicorn, real workers."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent

os.environ.setdefault("TEST_DATABASE_NAME", "production_control_bench")
os.environ.setdefault("TEST_RABBITMQ_VHOST", "production_control_bench")

from tests import support  # noqa: E402  (reads the names above)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Stack:
    """Fresh database + vhost, an api process and worker groups; used as a context manager."""

    def __init__(self, queues: tuple[str, ...] = ("fast", "heavy", "webhooks")) -> None:
        self.queues = queues
        self.port = free_port()
        # S3 too, as `make run` has it: without one the api retries creating its buckets
        # every second, CPU the figures would pay for.
        self.s3 = support.local_s3_environment()
        self.env = {
            **os.environ,
            **support.test_environment(),
            **self.s3,
            "API_PORT": str(self.port),
        }
        self.env["LOG_LEVEL"] = "WARNING"
        self.api: subprocess.Popen[bytes] | None = None
        self.workers: list[support.WorkerGroup] = []
        self.base_url = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Stack:
        os.environ.update({**support.test_environment(), **self.s3})  # the workers' too
        support.prepare_database()
        support.prepare_vhost()
        self.api = subprocess.Popen([sys.executable, "-m", "app"], cwd=ROOT, env=self.env)
        self.workers = [support.WorkerGroup(list(self.queues)).start()]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.base_url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        time.sleep(1.5)  # let the worker processes finish booting
        return self

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=120)

    def __exit__(self, *exc: object) -> None:
        for group in self.workers:
            group.stop()
        if self.api and self.api.poll() is None:
            self.api.terminate()
            self.api.wait(timeout=20)


def wait_task(client: httpx.Client, task_id: str, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get(f"/api/v1/tasks/{task_id}").json()
        if body["status"] in ("SUCCESS", "FAILURE", "CANCELLED"):
            return body
        time.sleep(0.02)
    raise TimeoutError(task_id)
