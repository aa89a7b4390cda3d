"""The README's walkthrough works verbatim against `unlearnd serve` on the embedded default
(the same command `make run` runs)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.helpers.network import free_port

ROOT = Path(__file__).resolve().parents[2]
DEV_KEY = "unlearnd-dev-admin-key-for-make-run"


def _walkthrough() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Walkthrough", 1)[1]
    return re.search(r"```sh\n(.*?)```", section, re.DOTALL).group(1)


@pytest.mark.slow
def test_walkthrough_runs_verbatim(tmp_path):
    port = free_port()
    env = {
        **os.environ,
        "UNLEARN_STATE_DIR": str(tmp_path / "state"),
        "UNLEARN_DATA_ROOT": str(tmp_path),
        "UNLEARN_DATABASE_URL": "",
        "UNLEARN_BROKER_URL": "",
        "UNLEARN_BOOTSTRAP_ADMIN_KEY": DEV_KEY,
        "UNLEARN_DEMO_MODEL": "true",
        "UNLEARN_DISPATCH_INTERVAL_SECONDS": "1",
        "OMP_NUM_THREADS": "1",
    }
    unlearnd = str(Path(sys.executable).with_name("unlearnd"))
    subprocess.run([unlearnd, "migrate"], env=env, check=True, capture_output=True, timeout=120)
    server = subprocess.Popen(
        [unlearnd, "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        script = _walkthrough().replace(
            "BASE=http://127.0.0.1:8000", f"BASE=http://127.0.0.1:{port}", 1
        )
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script], capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert '"state":"forgotten"' in result.stdout.replace(" ", "")
        assert '"parent": 1' in result.stdout and '"number": 2' in result.stdout
        assert "unchanged poll: 304" in result.stdout
    finally:
        server.terminate()
        output = server.communicate(timeout=30)[0].decode()
        if server.returncode not in (0, -15):
            print(output[-3000:])
