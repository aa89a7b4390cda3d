"""``make drills``: run the fault drills (tests/e2e/test_drills.py) N times and print, per drill,
how many runs passed and failed and how long they took.

    python -m tests.e2e.drills --runs 5
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from collections import defaultdict
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("-k", default=None, help="only the drills matching this expression")
    args = parser.parse_args()
    outcomes: dict[str, list[tuple[bool, float]]] = defaultdict(list)
    env = {**os.environ, "CI": os.environ.get("CI", "true")}
    with tempfile.TemporaryDirectory() as folder:
        for run in range(1, args.runs + 1):
            report = Path(folder) / f"run-{run}.xml"
            command = [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                "tests/e2e/test_drills.py",
                f"--junitxml={report}",
            ]
            if args.k:
                command += ["-k", args.k]
            started = time.monotonic()
            subprocess.run(command, env=env, check=False)
            print(f"run {run}/{args.runs}: {time.monotonic() - started:.0f} s", flush=True)
            for case in ElementTree.parse(report).iter("testcase"):
                failed = any(child.tag in ("failure", "error") for child in case)
                outcomes[case.get("name", "?")].append((not failed, float(case.get("time", 0))))
    print(f"\n{'drill':<62} {'runs':>5} {'failed':>7} {'mean s':>7} {'max s':>6}")
    failures = 0
    for name, results in sorted(outcomes.items()):
        failed = sum(1 for ok, _ in results if not ok)
        failures += failed
        times = [seconds for _, seconds in results]
        mean = sum(times) / len(times)
        print(f"{name:<62} {len(results):>5} {failed:>7} {mean:>7.1f} {max(times):>6.1f}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
