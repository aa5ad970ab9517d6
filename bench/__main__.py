"""`make bench`: run every benchmark suite, print the figures, write bench/results.json.

Each suite runs in its own interpreter: suites set process-wide state (environment,
settings cache, engines) for the stack they start, and must not leak it into the next.
`python -m bench core files` runs a subset.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SUITES = ("core", "files", "webhooks", "analytics")
ROOT = Path(__file__).resolve().parent


def run_suite(name: str, out: Path) -> None:
    """Child mode: run one suite and write its figures as JSON to `out`."""
    import importlib

    figures = importlib.import_module(f"bench.bench_{name}").run()
    out.write_text(json.dumps(figures, ensure_ascii=False))


def main(argv: list[str]) -> int:
    if argv[:1] == ["--suite"]:
        run_suite(argv[1], Path(argv[2]))
        return 0
    wanted = argv or list(SUITES)
    results: dict[str, object] = {
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    failed = []
    for name in wanted:
        print(f"== {name}", flush=True)
        with tempfile.NamedTemporaryFile(suffix=".json") as out:
            code = subprocess.call([sys.executable, "-m", "bench", "--suite", name, out.name])
            if code != 0:
                failed.append(name)
                continue
            figures = json.loads(Path(out.name).read_text() or "{}")
        for key, value in figures.items():
            print(f"  {key:<45} {value}", flush=True)
        results[name] = figures
    target = ROOT / "results.json"
    target.write_text(json.dumps(results, indent=2, ensure_ascii=False))
    print(f"written {target}")
    if failed:
        print(f"failed suites: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
