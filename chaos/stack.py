"""The whole set of processes for the fault run: `make run`'s supervisord with replicas.

tests.support.Stack starts `python -m ops.supervise` exactly as `make run` does, here with
API_REPLICAS=2 and SCHEDULER_REPLICAS=2 and this run's own database, vhost and S3, so a
process the fault run kills is restarted the way it would be on a developer's machine.
This module adds what the faults need: finding and killing processes of that stack.
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


def start(environment: dict[str, str], run_dir: Path) -> support.Stack:
    replicas = {"API_REPLICAS": str(len(API_PROGRAMS)), "SCHEDULER_REPLICAS": "2"}
    return support.Stack({**environment, **replicas}, run_dir=run_dir).start(timeout=120)


def kill_program(stack: support.Stack, program: str) -> int:
    pid = stack.pid(program)
    os.kill(pid, signal.SIGKILL)
    return pid


def kill_worker_process(
    stack: support.Stack, queue: str, choose: Callable[[list[int]], int]
) -> int | None:
    """SIGKILL one dramatiq worker process (below the program's master) of `queue`."""
    processes = descendants(stack.pid(f"workers:{queue}"))
    if not processes:
        return None
    victim = choose(processes)
    os.kill(victim, signal.SIGKILL)
    return victim


def sigkills(stack: support.Stack) -> list[str]:
    """supervisord's lines saying it had to SIGKILL a program after its grace."""
    return [line for line in stack.log().splitlines() if "killing" in line and "SIGKILL" in line]
