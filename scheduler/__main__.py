"""`python -m scheduler`: APScheduler 3 that only enqueues, exactly once per fire.

    python -m scheduler            run the schedule (any number of replicas)
    python -m scheduler run JOB    fire one job now (`make scheduler-run JOB=...`)
    python -m scheduler list       the schedule with each job's next fire time

Any number of replicas may run: a PostgreSQL advisory lock elects the one that runs the
schedule, the others wait to take over, and each fire is recorded as (job, fire_time)
under a unique key in the transaction that enqueues it (see scheduler/fire.py).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import signal
import sys

from app.config import get_settings
from app.db import dispose_engine
from app.logging import configure_logging
from app.schedule.plan import JOBS, plan
from app.wiring import outbox_relay
from scheduler.fire import SCHEDULER_ID, fire
from scheduler.runner import serve


async def _serve() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    # A relay here too, so scheduled jobs are published even while no api runs; relays in
    # several processes share the outbox safely (SKIP LOCKED).
    relay = outbox_relay()
    relaying = asyncio.create_task(relay.run(), name="outbox-relay")
    try:
        await serve(get_settings(), stop)
    finally:
        await relay.stop()
        relaying.cancel()
        await asyncio.gather(relaying, return_exceptions=True)
        await dispose_engine()


async def _run_now(job: str) -> str | None:
    relay = outbox_relay()
    try:
        task_id = await fire(job, dt.datetime.now(dt.UTC), f"manual:{SCHEDULER_ID}")
        await relay.drain()  # publish now: works whether or not an api is running
        return task_id
    finally:
        await relay.stop()
        await dispose_engine()


def _list() -> None:
    now = dt.datetime.now(dt.UTC)
    for planned in plan(get_settings()):
        next_fire = planned.next_fire_time(now)
        when = next_fire.isoformat() if next_fire else "-"
        print(f"{planned.name:<24} {planned.cron:<14} next {when}  {planned.job.description}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scheduler", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command")
    run = commands.add_parser("run", help="fire one job now")
    # Optional so that a bare `run` (`make scheduler-run` without JOB) explains itself
    # instead of firing anything.
    run.add_argument("job", nargs="?", choices=sorted(JOBS), help="the job to fire")
    commands.add_parser("list", help="the schedule and next fire times")
    args = parser.parse_args(argv)

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    if args.command == "run" and args.job is None:
        print("usage: make scheduler-run JOB=<job>  (python -m scheduler run <job>)\njobs:")
        _list()
        return 2
    if args.command == "run":
        task_id = asyncio.run(_run_now(args.job))
        print(f"{args.job}: task {task_id} enqueued")
        return 0
    if args.command == "list":
        _list()
        return 0
    asyncio.run(_serve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
