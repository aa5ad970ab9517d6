"""The migrations build exactly the schema the models describe (`make revision` stays empty)."""

from __future__ import annotations

import os
import subprocess
import sys

from tests import support


def test_models_match_the_migrated_schema():
    # A subprocess: the async Alembic env runs its own event loop.
    done = subprocess.run(
        [sys.executable, "-m", "alembic", "check"],
        cwd=support.ROOT,
        env={**os.environ, **support.test_environment()},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "No new upgrade operations detected" in done.stdout + done.stderr
