"""Where each kind of rule lives (CONTRIBUTING.md): a rule written in the wrong place fails here."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from app.models import TaskStatus

ROOT = Path(__file__).resolve().parents[2]
PROCESS_CODE = ("app", "workers", "scheduler")
LIFECYCLE = ROOT / "app" / "tasks" / "lifecycle.py"


def _process_files() -> list[Path]:
    return [path for folder in PROCESS_CODE for path in (ROOT / folder).rglob("*.py")]


def test_only_the_lifecycle_module_changes_a_task_status():
    """Every task status change is a function of app/tasks/lifecycle.py, with its SQL."""
    writes = re.compile(r"UPDATE\s+tasks\b|update\(Task\)|\.status\s*=\s*TaskStatus\.", re.I)
    offenders = [
        str(path.relative_to(ROOT))
        for path in _process_files()
        if path != LIFECYCLE and writes.search(path.read_text())
    ]
    assert offenders == []


def test_task_statuses_are_spelled_through_the_enum():
    """No 'STARTED' or 'RETRYING' beside the TaskStatus enum (its one declaration aside)."""
    names = "|".join(status.value for status in TaskStatus)
    literal = re.compile(rf"""['"]({names})['"]""")
    offenders = []
    for path in _process_files():
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if literal.search(line) and not re.match(r"\s*\w+ = \"\w+\"$", line):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert offenders == []


def test_services_take_a_session_and_jobs_open_their_own():
    """`service.py` functions run in the caller's transaction; work that opens its own
    transactions (and runs as a task) lives in `jobs.py`."""
    opens = re.compile(r"(?<![\w.])transaction\(\)")  # app.db's, not is_in_transaction()
    for path in (ROOT / "app").glob("*/service.py"):
        assert not opens.search(path.read_text()), f"{path.relative_to(ROOT)} opens one"


def test_every_async_service_function_takes_the_session_first():
    """`service.py` means "in the caller's transaction": its functions take the caller's
    session (or, on the hottest path, its driver connection); I/O without one (an email,
    an HTTP call) runs as a job, in jobs.py."""
    callers_handle = {"AsyncSession", "asyncpg.Connection"}
    offenders = []
    for path in (ROOT / "app").glob("*/service.py"):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.AsyncFunctionDef):
                first = node.args.args[0] if node.args.args else None
                if (
                    first is None
                    or ast.unparse(first.annotation or ast.Pass()) not in callers_handle
                ):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.name}")
    assert offenders == []


def test_the_job_context_is_declared_once():
    """Jobs take app.tasks.context's TaskContext/JobContext/Progress, never their own copy."""
    declared = re.compile(r"^class (JobContext|TaskContext)\b|^Progress = ", re.M)
    places = [
        str(path.relative_to(ROOT))
        for path in _process_files()
        if declared.search(path.read_text())
    ]
    assert places == ["app/tasks/context.py"]


def test_resumable_jobs_live_in_app():
    """An actor stays thin: a job committing chunks with checkpoints is app/<feature>/jobs.py's."""
    offenders = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "workers").rglob("*.py")
        if "save_checkpoint(" in path.read_text()
    ]
    assert offenders == []


FEATURES = ROOT / "app"
# Folders of app/ that are features (an /api/v1 resource): each has the three files.
NOT_FEATURES = {"system", "metrics", "tasks"}  # probes, Prometheus, the job machinery


def test_every_feature_folder_has_api_schemas_and_service():
    for folder in sorted(p for p in FEATURES.iterdir() if (p / "__init__.py").exists()):
        if folder.name in NOT_FEATURES:
            continue
        missing = [f for f in ("api.py", "schemas.py", "service.py") if not (folder / f).exists()]
        assert not missing, f"app/{folder.name} lacks {missing}"


def test_every_event_and_task_kind_is_in_the_readme():
    """CONTRIBUTING's last step: the README names every webhook event and every task kind."""
    from app.outbox import EVENTS
    from app.tasks.kinds import TASK_QUEUES

    readme = (ROOT / "README.md").read_text()
    missing = [n for n in (*EVENTS, *TASK_QUEUES) if not re.search(rf"\b{n}\b", readme)]
    assert missing == []


def test_the_project_refers_to_no_file_outside_it():
    """Comments, docs and tests name files of this repository only (no specification seeds,
    design notes or issue texts kept elsewhere)."""
    outside = re.compile(
        r"\bseeds?\b \d{3}|\bseeds?/|DESIGN\.md|\.\./shared\b|\bissues? #?\d+", re.I
    )
    offenders = [
        str(path.relative_to(ROOT))
        for folder in (*PROCESS_CODE, "tests", "migrations", "ops", "bench", "chaos")
        for path in (ROOT / folder).rglob("*.py")
        if path != Path(__file__) and outside.search(path.read_text())
    ]
    for doc in ("README.md", "CONTRIBUTING.md"):
        if outside.search((ROOT / doc).read_text()):
            offenders.append(doc)
    assert offenders == []
