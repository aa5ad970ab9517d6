"""The whole set of processes under supervisord, as `make run` starts them, for the fault run.

Two api replicas, a worker group per queue, two schedulers: each a supervisord program with
the same command `make run` uses, so a process the fault run kills is restarted the way it
would be on a developer's machine. The stack has a database and a RabbitMQ vhost of its
own (re-created on start), a local S3 (moto's server) and the webhook receiver.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import xmlrpc.client
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from supervisor.xmlrpc import SupervisorTransport

ROOT = Path(__file__).resolve().parent.parent

WORKER_QUEUES = ("fast", "heavy", "webhooks")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class Program:
    name: str
    command: str
    environment: dict[str, str] = field(default_factory=dict)


def programs(api_ports: list[int], schedulers: int) -> list[Program]:
    python = sys.executable
    apis = [
        Program(f"api-{n}", f"{python} -m app", {"API_PORT": str(port)})
        for n, port in enumerate(api_ports, 1)
    ]
    workers = [Program(f"worker-{q}", f"{python} -m workers --queues {q}") for q in WORKER_QUEUES]
    scheduler = [
        Program(f"scheduler-{n}", f"{python} -m scheduler") for n in range(1, schedulers + 1)
    ]
    return [*apis, *workers, *scheduler]


def supervisord_config(run_dir: Path, programs: list[Program]) -> str:
    """Restart on any exit with supervisord's backoff; stop with SIGTERM to the whole process
    group, waiting longer than any process's own grace (a SIGKILL would be a finding)."""
    sections = [
        f"[unix_http_server]\nfile={run_dir}/supervisor.sock\n",
        f"[supervisord]\nnodaemon=true\nlogfile={run_dir}/supervisord.log\n"
        f"pidfile={run_dir}/supervisord.pid\nchildlogdir={run_dir}\nloglevel=info\n",
        "[rpcinterface:supervisor]\n"
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n",
    ]
    for program in programs:
        environment = ",".join(f'{k}="{v}"' for k, v in program.environment.items())
        sections.append(
            f"[program:{program.name}]\ncommand={program.command}\ndirectory={ROOT}\n"
            + (f"environment={environment}\n" if environment else "")
            + "autorestart=true\nstartsecs=1\nstartretries=100\nstopsignal=TERM\n"
            "stopwaitsecs=60\nstopasgroup=true\nkillasgroup=true\nredirect_stderr=true\n"
            f"stdout_logfile={run_dir}/{program.name}.log\nstdout_logfile_maxbytes=0\n"
        )
    # One group: supervisord stops the programs of a group together, groups one by one.
    names = ",".join(program.name for program in programs)
    sections.append(f"[group:stack]\nprograms={names}\n")
    return "\n".join(sections)


def descendants(pid: int) -> list[int]:
    """Every process below `pid`, read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    found, pending = [], [pid]
    while pending:
        for child in children.get(pending.pop(), []):
            found.append(child)
            pending.append(child)
    return found


class Supervised:
    """supervisord running the stack's programs; controlled over its XML-RPC socket."""

    def __init__(self, run_dir: Path, environment: dict[str, str], api_ports: list[int]) -> None:
        self.run_dir = run_dir
        self.environment = environment
        self.api_urls = [f"http://127.0.0.1:{port}" for port in api_ports]
        self.config = run_dir / "supervisord.conf"
        self.config.write_text(supervisord_config(run_dir, programs(api_ports, schedulers=2)))
        self.process: subprocess.Popen[bytes] | None = None

    def rpc(self) -> Any:
        transport = SupervisorTransport(None, None, f"unix://{self.run_dir}/supervisor.sock")
        return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport).supervisor

    def start(self, timeout: float = 60.0) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "supervisor.supervisord", "-c", str(self.config)],
            cwd=ROOT,
            env={**os.environ, **self.environment},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"supervisord exited; see {self.run_dir}/supervisord.log")
            if self.all_running() and all(self._healthy(url) for url in self.api_urls):
                return
            time.sleep(0.3)
        raise RuntimeError(f"the stack did not come up in {timeout:.0f} s; see {self.run_dir}")

    @staticmethod
    def _healthy(url: str) -> bool:
        try:
            return httpx.get(f"{url}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def all_running(self) -> bool:
        try:
            return all(info["statename"] == "RUNNING" for info in self.rpc().getAllProcessInfo())
        except (OSError, xmlrpc.client.Fault):
            return False

    def pid(self, program: str) -> int:
        return int(self.rpc().getProcessInfo(f"stack:{program}")["pid"])

    def kill_program(self, program: str) -> int:
        pid = self.pid(program)
        os.kill(pid, signal.SIGKILL)
        return pid

    def kill_worker_child(self, queue: str, choose: Any) -> int | None:
        """SIGKILL one dramatiq worker process (a leaf below the program) of `queue`."""
        below = descendants(self.pid(f"worker-{queue}"))
        leaves = [pid for pid in below if not descendants(pid)]
        if not leaves:
            return None
        victim = int(choose(leaves))
        os.kill(victim, signal.SIGKILL)
        return victim

    def stop(self, timeout: float = 90.0) -> int | None:
        """SIGTERM supervisord (what Ctrl-C does); its exit code."""
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        everything = descendants(self.process.pid)
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            # Programs run in process groups of their own: kill each, or they outlive the run.
            for pid in [self.process.pid, *everything, *descendants(self.process.pid)]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            return self.process.wait()

    def sigkills(self) -> list[str]:
        """supervisord's lines saying it had to SIGKILL a program after its grace."""
        log = self.run_dir / "supervisord.log"
        lines = log.read_text().splitlines() if log.exists() else []
        return [line for line in lines if "killing" in line and "SIGKILL" in line]
