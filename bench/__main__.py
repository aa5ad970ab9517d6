"""`make bench`: run the benchmark suites, print the figures, write bench/results.json.

Each suite runs in its own interpreter: suites set process-wide state (environment,
settings cache, engines) for the stack they start, and must not leak it into the next.

    python -m bench                               # every suite at its default size
    python -m bench --only single,core            # a subset
    python -m bench --scale 0.1                   # every size x0.1 (a quick smoke run)
    python -m bench --set codes=20000 --set single_requests=5000

results.json holds one row per figure: {figure, unit, value, floor, ratio, target, pass};
a figure with a floor (what PostgreSQL alone does for the same work, measured in the
same run) is judged on value/floor, which cancels most of a shared machine's noise.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.targets import SIZES, judge

SUITES = ("single", "core", "webhooks", "files", "analytics")
ROOT = Path(__file__).resolve().parent


def run_suite(name: str, out: Path) -> None:
    """Child mode: run one suite and write its raw figures as JSON to `out`."""
    import gc
    import importlib

    # The client's own pauses are not the service's time: no cyclic collections in the
    # measuring process (as timeit does); a suite runs for seconds, in its own interpreter.
    gc.disable()
    figures = importlib.import_module(f"bench.bench_{name}").run()
    out.write_text(json.dumps(figures, ensure_ascii=False))


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--only", default=",".join(SUITES), help=f"comma-separated subset of {', '.join(SUITES)}"
    )
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every size (default 1)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=N",
        help="one size: " + ", ".join(f"{k} (default {v})" for k, v in SIZES.items()),
    )
    args = parser.parse_args(argv)
    args.suites = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in args.suites if s not in SUITES]
    if unknown or not args.suites:
        parser.error(
            f"unknown scenario {', '.join(map(repr, unknown))}; known: {', '.join(SUITES)}"
        )
    if not 0 < args.scale <= 10:
        parser.error(f"--scale must be in (0, 10], not {args.scale}")
    sizes = {name: max(1, round(value * args.scale)) for name, value in SIZES.items()}
    for item in args.set:
        name, _, value = item.partition("=")
        if name not in SIZES:
            parser.error(f"unknown size {name!r}; known: {', '.join(SIZES)}")
        if not value.isdigit() or int(value) < 1:
            parser.error(f"size {name} must be a positive integer, not {value!r}")
        sizes[name] = int(value)
    args.sizes = sizes
    return args


def main(argv: list[str]) -> int:
    if argv[:1] == ["--suite"]:
        run_suite(argv[1], Path(argv[2]))
        return 0
    args = _parse(argv)
    env = {**os.environ, "BENCH_SIZES": json.dumps(args.sizes)}
    results: dict[str, object] = {
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
        },
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "sizes": args.sizes,
    }
    rows: list[dict[str, object]] = []
    failed = []
    began = time.perf_counter()
    for index, name in enumerate(args.suites, 1):
        print(f"== [{index}/{len(args.suites)}] {name}", flush=True)
        started = time.perf_counter()
        with tempfile.NamedTemporaryFile(suffix=".json") as out:
            code = subprocess.call(
                [sys.executable, "-m", "bench", "--suite", name, out.name], env=env
            )
            if code != 0:
                failed.append(name)
                print(f"   {name} FAILED (exit {code})", flush=True)
                continue
            figures = json.loads(Path(out.name).read_text() or "{}")
        results[name] = figures
        judged = judge(name, figures)
        rows.extend(judged)
        for row in judged:
            verdict = {True: "pass", False: "FAIL", None: ""}[row["pass"]]
            floor = f" floor {row['floor']}" if row["floor"] is not None else ""
            ratio = f" ratio {row['ratio']}" if row["ratio"] is not None else ""
            target = f" target {row['target']}" if row["target"] else ""
            print(
                f"   {row['figure']:<44} {row['value']} {row['unit']}{floor}{ratio}{target}"
                f" {verdict}",
                flush=True,
            )
        print(f"   ({name}: {time.perf_counter() - started:.0f} s)", flush=True)
    results["figures"] = rows
    results["seconds"] = round(time.perf_counter() - began, 1)
    written = ROOT / "results.json"
    written.write_text(json.dumps(results, indent=2, ensure_ascii=False, default=str))
    missed = [str(r["figure"]) for r in rows if r["pass"] is False]
    print(
        f"written {written} ({results['seconds']} s); targets missed: {', '.join(missed) or 'none'}"
    )
    if failed:
        print(f"failed suites: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
