"""The whole set of processes for the fault run: `make run`'s supervisord with replicas.

tests.support.Stack starts `python -m ops.supervise` exactly as `make run` does, here with
API_REPLICAS=2 and SCHEDULER_REPLICAS=2 and this run's own database, vhost and S3, so a
process the fault run kills is restarted the way it would be on a developer's machine.
With two worker groups per queue (the default), a task whose worker dies is taken over by
the other group while the dead one restarts. This module adds what the faults
need: finding and killing processes of that stack.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

from tests import support

WORKER_QUEUES = ("fast", "heavy", "webhooks")
API_PROGRAMS = ("api", "api-2")
SCHEDULER_PROGRAMS = ("scheduler", "scheduler-2")


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


def start(environment: dict[str, str], run_dir: Path, worker_replicas: int) -> support.Stack:
    replicas = {
        "API_REPLICAS": str(len(API_PROGRAMS)),
        "SCHEDULER_REPLICAS": str(len(SCHEDULER_PROGRAMS)),
        "WORKER_REPLICAS": str(worker_replicas),
    }
    return support.Stack({**environment, **replicas}, run_dir=run_dir).start(timeout=120)


def kill_program(stack: support.Stack, program: str) -> int:
    pid = stack.pid(program)
    os.kill(pid, signal.SIGKILL)
    return pid


def kill_worker_process(
    stack: support.Stack, queue: str, choose: Callable[[list[int]], int]
) -> int | None:
    """SIGKILL one dramatiq worker process (below a program's master) of `queue`."""
    programs = [  # workers:heavy, workers-2:heavy-2, ...
        name
        for name in stack.programs()
        if name.startswith("workers") and name.split(":")[1].split("-")[0] == queue
    ]
    processes = [pid for program in programs for pid in descendants(stack.pid(program))]
    if not processes:
        return None
    victim = choose(processes)
    os.kill(victim, signal.SIGKILL)
    return victim


def owner_of_local_port(port: int) -> int | None:
    """The process whose TCP socket has local port `port` (a database client's side)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{fields[9]}]")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if any(os.readlink(fd) in inodes for fd in (entry / "fd").iterdir()):
                return int(entry.name)
        except OSError:
            continue
    return None


def kill_process_of_stack(stack: support.Stack, pid: int) -> None:
    """SIGKILL `pid`, refusing any process that is not part of this stack."""
    assert stack.process is not None
    if pid not in descendants(stack.process.pid):
        raise RuntimeError(f"process {pid} is not part of this stack")
    os.kill(pid, signal.SIGKILL)


def sigkills(stack: support.Stack) -> list[str]:
    """supervisord's lines saying it had to SIGKILL a program after its grace."""
    return [line for line in stack.log().splitlines() if "killing" in line and "SIGKILL" in line]
