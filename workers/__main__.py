"""`python -m workers --queues fast heavy`: one Dramatiq process group per queue.

Each group is the `dramatiq` CLI bound to one queue with that queue's concurrency
(WORKER_CONCURRENCY_<QUEUE> threads x WORKER_PROCESSES processes), so a long export never
delays a webhook. With one queue (how the supervisor and compose run workers) this process
becomes the dramatiq CLI itself (exec): the supervisor signals dramatiq directly and sees
its exit. With several queues SIGINT/SIGTERM are passed on and we wait for a clean shutdown.

Each group serves its metrics (dramatiq's Prometheus middleware, plus task durations) on
WORKER_METRICS_PORT_<QUEUE>, collected across its processes through a directory of its own
(prometheus_client's multiprocess mode), emptied when the group starts.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from app.config import get_settings
from app.tasks.kinds import QUEUES
from app.wiring import ACTOR_MODULES


def command_for(queue: str) -> list[str]:
    settings = get_settings()
    threads = getattr(settings, f"worker_concurrency_{queue}")
    return [
        sys.executable,
        "-m",
        "dramatiq",
        "app.broker:broker",
        *ACTOR_MODULES,
        "--queues",
        queue,
        "--processes",
        str(settings.worker_processes),
        "--threads",
        str(threads),
        # After this, messages still running are left unacknowledged and RabbitMQ
        # redelivers them when the connection closes; the process exits either way.
        "--worker-shutdown-timeout",
        str(settings.worker_shutdown_timeout * 1000),
        "--skip-logging",
    ]


# Read by dramatiq.middleware.prometheus and prometheus_client at import, hence per process.
METRICS_ENV = ("dramatiq_prom_host", "dramatiq_prom_port", "dramatiq_prom_db")
MULTIPROCESS_ENV = ("PROMETHEUS_MULTIPROC_DIR", "prometheus_multiproc_dir")


def environment_for(queue: str) -> dict[str, str]:
    """The group's environment: its metrics port and an emptied directory, or no exporter
    (port 0). The directory is named by the port, which only one group can hold at a time;
    emptied at start because files left by an earlier run would be counted too."""
    settings = get_settings()
    env = {k: v for k, v in os.environ.items() if k not in METRICS_ENV + MULTIPROCESS_ENV}
    env["PYTHONUNBUFFERED"] = "1"
    port = getattr(settings, f"worker_metrics_port_{queue}")
    if port:
        metrics_dir = Path(tempfile.gettempdir()) / f"production-control-metrics-{port}"
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir(parents=True)
        env.update(
            dramatiq_prom_host=settings.worker_metrics_host,
            dramatiq_prom_port=str(port),
            dramatiq_prom_db=str(metrics_dir),
        )
        env.update(dict.fromkeys(MULTIPROCESS_ENV, str(metrics_dir)))
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers", description=__doc__)
    parser.add_argument("--queues", nargs="+", choices=QUEUES, default=list(QUEUES))
    args = parser.parse_args(argv)
    if len(args.queues) == 1:
        command = command_for(args.queues[0])
        os.execve(command[0], command, environment_for(args.queues[0]))

    groups = {
        queue: subprocess.Popen(command_for(queue), env=environment_for(queue))
        for queue in args.queues
    }

    def forward(signum: int, _frame: object) -> None:
        for process in groups.values():
            if process.poll() is None:
                process.send_signal(signum)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    # When one group exits on its own, stop the others: a half-running worker set hides faults.
    while all(process.poll() is None for process in groups.values()):
        time.sleep(0.2)
    forward(signal.SIGTERM, None)
    codes = [process.wait() for process in groups.values()]
    return max(codes, default=0)


if __name__ == "__main__":
    sys.exit(main())
