"""`make bench`: run every benchmark suite, print the figures, write bench/results.json."""

from __future__ import annotations

import importlib
import json
import platform
import sys
import time
from pathlib import Path

SUITES = ("bench.bench_core", "bench.bench_files", "bench.bench_webhooks", "bench.bench_analytics")


def main(argv: list[str]) -> int:
    wanted = [f"bench.bench_{name}" for name in argv] or list(SUITES)
    results: dict[str, object] = {
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    for suite in wanted:
        module = importlib.import_module(suite)
        print(f"== {suite}", flush=True)
        figures = module.run()
        for name, value in figures.items():
            print(f"  {name:<45} {value}", flush=True)
        results[suite.removeprefix("bench.bench_")] = figures
    out = Path(__file__).resolve().parent / "results.json"
    out.write_text(json.dumps(results, indent=2, ensure_ascii=False))
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
