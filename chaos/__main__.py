"""`python -m chaos [--duration S] [--fault-every S] [--seed N]`: the fault run.

Starts the whole set of processes under supervisord (2 api, a worker group per queue,
2 schedulers) with a local S3 and a local webhook receiver, on a database and a RabbitMQ
vhost of its own; drives a mixed workload for --duration seconds while SIGKILLing
workers, an api and the scheduler leader, restarting RabbitMQ (stop_app/start_app) and
making the receiver fail for a while; then waits for the system to settle and checks its
invariants. Prints the figures, writes them to <run dir>/results.json, and exits 1 on any
violation. RabbitMQ is always started again, and every process stopped, even on failure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
from pathlib import Path

from chaos.run import FAULTS, Options, default_run_dir, fault_run


def positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


def positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, got {text!r}")
    return int(text)


def fault_list(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in FAULTS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown fault {', '.join(unknown) or '(none given)'}; choose from {', '.join(FAULTS)}"
        )
    return names


def parse(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m chaos", description=(__doc__ or "").split("\n\n")[1]
    )
    parser.add_argument("--duration", type=positive_seconds, default=180.0, help="seconds")
    parser.add_argument(
        "--fault-every", type=positive_seconds, default=10.0, help="seconds between faults"
    )
    parser.add_argument(
        "--settle", type=positive_seconds, default=180.0, help="longest wait to settle, seconds"
    )
    parser.add_argument("--clients", type=positive_int, default=4, help="concurrent clients")
    parser.add_argument(
        "--worker-replicas",
        type=positive_int,
        default=2,
        help="worker groups per queue (with 2, a dead worker's task moves to the other)",
    )
    parser.add_argument(
        "--faults", type=fault_list, default=FAULTS, help=f"comma list of: {', '.join(FAULTS)}"
    )
    parser.add_argument("--seed", type=int, default=None, help="random seed (printed)")
    parser.add_argument("--run-dir", type=Path, default=None, help="logs and results.json")
    args = parser.parse_args(argv)
    run_dir = args.run_dir or default_run_dir()
    run_dir.mkdir(parents=True, exist_ok=True)
    return Options(
        duration=args.duration,
        fault_every=args.fault_every,
        settle=args.settle,
        seed=args.seed if args.seed is not None else random.randrange(1_000_000),
        clients=args.clients,
        faults=args.faults,
        worker_replicas=args.worker_replicas,
        run_dir=run_dir.resolve(),
    )


def main(argv: list[str] | None = None) -> int:
    options = parse(argv)
    print(
        f"chaos: {options.duration:.0f} s, a fault every {options.fault_every:.0f} s, "
        f"seed {options.seed}, logs in {options.run_dir}",
        flush=True,
    )
    report = asyncio.run(fault_run(options))
    (options.run_dir / "results.json").write_text(json.dumps(report, indent=2, default=str))
    for name, value in report.items():
        if name != "violations":
            print(f"  {name:<40} {value}")
    for violation in report["violations"]:
        print(f"VIOLATION {violation}")
    print(f"violations: {len(report['violations'])}")
    return 1 if report["violations"] else 0


if __name__ == "__main__":
    sys.exit(main())
