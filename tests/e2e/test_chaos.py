"""`make chaos`, short: the whole set of processes under faults keeps every invariant."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from chaos.run import FAULTS
from tests import support

pytestmark = pytest.mark.e2e


def chaos(*flags: str, run_dir: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "CHAOS_DATABASE_NAME": f"{support.TEST_DATABASE}_chaos",
        "CHAOS_RABBITMQ_VHOST": f"{support.TEST_VHOST}_chaos",
    }
    if run_dir is not None:
        flags = (*flags, "--run-dir", str(run_dir))
    return subprocess.run(
        [sys.executable, "-m", "chaos", *flags],
        cwd=support.ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_short_fault_run_keeps_every_invariant(tmp_path: Path) -> None:
    run = chaos(
        "--duration", "15", "--fault-every", "2", "--seed", "7", "--worker-replicas", "1",
        run_dir=tmp_path,
    )  # fmt: skip
    report = json.loads((tmp_path / "results.json").read_text())
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert report["violations"] == []
    assert set(report["faults"]) == set(FAULTS), report["faults_not_injected"]
    assert report["tasks_lost"] == report["events_lost"] == report["duplicates"] == 0
    assert report["replays_sent"] > 0
    assert report["deliveries_expected"] > 0
    assert report["supervisor_sigkills"] == 0


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--duration", "0"], "must be a positive number of seconds"),
        (["--duration", "-5"], "must be a positive number of seconds"),
        (["--fault-every", "soon"], "is not a number of seconds"),
        (["--faults", "kill_api,meteor"], "unknown fault meteor"),
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["--worker-replicas", "0"], "must be a positive whole number"),
    ],
)
def test_bad_flags_are_refused_before_anything_starts(flags: list[str], message: str) -> None:
    run = chaos(*flags)
    assert run.returncode == 2
    assert message in run.stderr
