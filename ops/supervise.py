"""`python -m ops.supervise`: every process of `make run` under supervisord, in the foreground.

Prepares what ops/supervisord.conf reads from the environment, then becomes supervisord
(exec, so a signal to this process is a signal to supervisord):

* PC_RUN_DIR (default `.run/`): the control socket, pid file and child log dir;
* PC_EXTRA_PROGRAMS: `local-s3.conf` (moto on 127.0.0.1:S3_PORT) unless S3_ENDPOINT_URL is
  configured (environment or .env), so an external S3 means no s3 program at all;
* PC_API_STOPWAITSECS / PC_WORKER_STOPWAITSECS: how long supervisord waits for a stopping
  program before SIGKILL, always longer than the program's own shutdown grace;
* API_REPLICAS / SCHEDULER_REPLICAS / WORKER_REPLICAS > 1: programs `api-2`,
  `scheduler-2`, `workers-2:heavy-2`, ... written to PC_RUN_DIR/replicas.conf as copies of
  the committed programs, so every replica is run and stopped by the same rules.
"""

from __future__ import annotations

import configparser
import os
import sys
from pathlib import Path

from dotenv import dotenv_values

from app.config import Settings, get_settings
from app.tasks.kinds import QUEUES

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "ops" / "supervisord.conf"
# Beyond a program's own grace: interpreter exit, closing connections, a loaded machine.
STOP_MARGIN_SECONDS = 10


def replica_programs(settings: Settings) -> str:
    """Copies of supervisord.conf's programs for the replicas asked for: `api-N` (on
    API_PORT + N - 1), `scheduler-N`, and a group `workers-N` of `fast-N`, `heavy-N`,
    `webhooks-N` (metrics on WORKER_METRICS_PORT_<QUEUE> + 10 (N - 1))."""
    committed = configparser.RawConfigParser()
    committed.read(CONFIG)
    copies = configparser.RawConfigParser()

    def copy(program: str, number: int, environment: str | None = None) -> None:
        section = f"program:{program}-{number}"
        copies[section] = dict(committed[f"program:{program}"])
        copies[section]["directory"] = str(ROOT)  # `%(here)s` is the including file's dir
        if environment:
            copies[section]["environment"] = environment

    for number in range(2, settings.api_replicas + 1):
        copy("api", number, f'API_PORT="{settings.api_port + number - 1}"')
    for number in range(2, settings.scheduler_replicas + 1):
        copy("scheduler", number)
    for number in range(2, settings.worker_replicas + 1):
        for queue in QUEUES:
            port = getattr(settings, f"worker_metrics_port_{queue}")
            moved = port + 10 * (number - 1) if port else 0
            copy(queue, number, f'WORKER_METRICS_PORT_{queue.upper()}="{moved}"')
        programs = ",".join(f"{queue}-{number}" for queue in QUEUES)
        copies[f"group:workers-{number}"] = {"programs": programs, "priority": "200"}
    lines: list[str] = []
    for section in copies.sections():
        lines.append(f"[{section}]")
        lines += [f"{key}={value}" for key, value in copies[section].items()]
        lines.append("")
    return "\n".join(lines)


def supervisor_environment(environ: dict[str, str]) -> dict[str, str]:
    """The environment supervisord (and through it every program) starts with."""
    env = dict(environ)
    # The programs' commands (`python`, `moto_server`) come from this interpreter's venv.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("PC_RUN_DIR", str(ROOT / ".run"))

    extra_programs = []
    configured_s3 = env.get("S3_ENDPOINT_URL") or dotenv_values(ROOT / ".env").get(
        "S3_ENDPOINT_URL"
    )
    if not configured_s3:
        env.setdefault("S3_PORT", "9000")
        env["S3_ENDPOINT_URL"] = f"http://127.0.0.1:{env['S3_PORT']}"
        extra_programs.append(str(CONFIG.parent / "local-s3.conf"))

    settings = get_settings()
    counts = (settings.api_replicas, settings.scheduler_replicas, settings.worker_replicas)
    if min(counts) < 1:
        raise SystemExit("API_REPLICAS, SCHEDULER_REPLICAS and WORKER_REPLICAS must be at least 1")
    if max(counts) > 1:
        replicas = Path(env["PC_RUN_DIR"]) / "replicas.conf"
        replicas.parent.mkdir(parents=True, exist_ok=True)
        replicas.write_text(replica_programs(settings))
        extra_programs.append(str(replicas))
    env["PC_EXTRA_PROGRAMS"] = " ".join(extra_programs)
    env["PC_API_STOPWAITSECS"] = str(settings.api_shutdown_timeout + STOP_MARGIN_SECONDS)
    env["PC_WORKER_STOPWAITSECS"] = str(settings.worker_shutdown_timeout + STOP_MARGIN_SECONDS)
    return env


def main() -> None:
    os.chdir(ROOT)  # where .env is read from, as every program does
    env = supervisor_environment(dict(os.environ))
    Path(env["PC_RUN_DIR"]).mkdir(parents=True, exist_ok=True)
    settings = get_settings()
    for number in range(settings.api_replicas):
        print(f"Docs: http://{settings.api_host}:{settings.api_port + number}/docs", flush=True)
    print("Processes: make ps, make restart P=<name>", flush=True)
    supervisord = str(Path(sys.executable).parent / "supervisord")
    os.execve(supervisord, [supervisord, "--nodaemon", "--configuration", str(CONFIG)], env)


if __name__ == "__main__":
    main()
