"""`python -m ops.supervise`: every process of `make run` under supervisord, in the foreground.

Prepares what ops/supervisord.conf reads from the environment, then becomes supervisord
(exec, so a signal to this process is a signal to supervisord):

* PC_RUN_DIR (default `.run/`): the control socket, pid file and child log dir;
* PC_EXTRA_PROGRAMS: `local-s3.conf` (moto on 127.0.0.1:S3_PORT) unless S3_ENDPOINT_URL is
  configured (environment or .env), so an external S3 means no s3 program at all;
* PC_API_STOPWAITSECS / PC_WORKER_STOPWAITSECS: how long supervisord waits for a stopping
  program before SIGKILL, always longer than the program's own shutdown grace.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from dotenv import dotenv_values

from app.config import get_settings

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "ops" / "supervisord.conf"
# Beyond a program's own grace: interpreter exit, closing connections, a loaded machine.
STOP_MARGIN_SECONDS = 10


def supervisor_environment(environ: dict[str, str]) -> dict[str, str]:
    """The environment supervisord (and through it every program) starts with."""
    env = dict(environ)
    # The programs' commands (`python`, `moto_server`) come from this interpreter's venv.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("PC_RUN_DIR", str(ROOT / ".run"))

    configured_s3 = env.get("S3_ENDPOINT_URL") or dotenv_values(ROOT / ".env").get(
        "S3_ENDPOINT_URL"
    )
    if configured_s3:
        env["PC_EXTRA_PROGRAMS"] = ""
    else:
        env.setdefault("S3_PORT", "9000")
        env["S3_ENDPOINT_URL"] = f"http://127.0.0.1:{env['S3_PORT']}"
        env["PC_EXTRA_PROGRAMS"] = "local-s3.conf"

    settings = get_settings()
    env["PC_API_STOPWAITSECS"] = str(settings.api_shutdown_timeout + STOP_MARGIN_SECONDS)
    env["PC_WORKER_STOPWAITSECS"] = str(settings.worker_shutdown_timeout + STOP_MARGIN_SECONDS)
    return env


def main() -> None:
    os.chdir(ROOT)  # where .env is read from, as every program does
    env = supervisor_environment(dict(os.environ))
    Path(env["PC_RUN_DIR"]).mkdir(parents=True, exist_ok=True)
    settings = get_settings()
    print(
        f"Docs: http://{settings.api_host}:{settings.api_port}/docs  "
        "(processes: make ps, make restart P=<name>)",
        flush=True,
    )
    supervisord = str(Path(sys.executable).parent / "supervisord")
    os.execve(supervisord, [supervisord, "--nodaemon", "--configuration", str(CONFIG)], env)


if __name__ == "__main__":
    main()
