"""The deployment files: docker-compose.yml resolves with docker-compose (no engine needed),
wires the production shape of docs/architecture.md, and the Dockerfile and Prometheus config agree
with it. Without ``docker-compose`` the compose checks skip, except in CI where they fail."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
PROMETHEUS_FILE = ROOT / "deploy" / "prometheus.yml"
DOCKERFILE = ROOT / "Dockerfile"
NGINX_FILE = ROOT / "deploy" / "nginx.conf"

# The variables docker-compose.yml requires (`${VAR:?...}`); dummies are enough to resolve it.
REQUIRED_ENV = {
    "UNLEARN_BOOTSTRAP_ADMIN_KEY": "compose-test-admin-key-0123456789ab",
    "POSTGRES_PASSWORD": "compose-test-password",
    "UNLEARN_AUDIT_SIGNING_KEY": "A" * 43,
}
SERVICES = {"postgres", "redis", "migrate", "api", "edge", "worker", "beat", "prometheus"}
UNLEARND_ROLES = {"api", "worker", "beat"}


def _compose(
    *args: str, env: dict[str, str] | None = None, file: Path = COMPOSE_FILE
) -> subprocess.CompletedProcess[str]:
    executable = shutil.which("docker-compose")
    if executable is None:
        message = "docker-compose is not installed (Debian: apt-get install docker-compose)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}; CI must validate docker-compose.yml")
        pytest.skip(message)
    # docker-compose is a Python program of the system's own: keep our interpreter's paths out.
    dropped = {*REQUIRED_ENV, "PYTHONPATH", "PYTHONHOME"}
    environment = {key: value for key, value in os.environ.items() if key not in dropped}
    environment.update(REQUIRED_ENV if env is None else env)
    return subprocess.run(
        [executable, "--project-directory", str(ROOT), "-f", str(file), *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _subtree(text: str, *path: str) -> str:
    """The block under ``path`` in block-style YAML (what ``docker-compose config`` prints),
    as text; PyYAML is not a dependency of the project, so no parser is assumed."""
    lines = text.splitlines()
    low, high = 0, len(lines)
    for key in path:
        children = [line for line in lines[low:high] if line.strip()]
        child_indent = len(children[0]) - len(children[0].lstrip(" ")) if children else 0
        pattern = re.compile(rf"^ {{{child_indent}}}(- )?{re.escape(key)}:( |$)")
        for index in range(low, high):
            if pattern.match(lines[index]):
                break
        else:
            raise AssertionError(f"no {'.'.join(path)} in the resolved compose file")
        end = index + 1
        while end < high:
            body = lines[end].lstrip(" ")
            indent = len(lines[end]) - len(body)
            if (
                body
                and indent <= child_indent
                and not (indent == child_indent and body[:2] == "- ")
            ):
                break
            end += 1
        low, high = index + 1, end
    return "\n".join(lines[low:high])


@pytest.fixture(scope="module")
def resolved() -> str:
    result = _compose("config")
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_config_validates() -> None:
    result = _compose("config", "-q")
    assert result.returncode == 0, result.stderr


def test_config_refuses_a_missing_admin_key() -> None:
    result = _compose("config", "-q", env={"POSTGRES_PASSWORD": "x"})
    assert result.returncode != 0
    assert "UNLEARN_BOOTSTRAP_ADMIN_KEY" in result.stderr


def test_services_and_volumes() -> None:
    services = _compose("config", "--services")
    assert services.returncode == 0, services.stderr
    assert SERVICES <= set(services.stdout.split())
    volumes = _compose("config", "--volumes")
    assert volumes.returncode == 0, volumes.stderr
    assert {"pgdata", "unlearnd-state"} <= set(volumes.stdout.split())


def _gpu_ids(resolved: str, service: str) -> list[str]:
    devices = _subtree(resolved, "services", service, "deploy", "resources", "reservations")
    assert "driver: nvidia" in devices
    assert re.search(r"capabilities:\s*\n\s*- gpu\b|capabilities: \[gpu\]", devices)
    assert "count:" not in devices, "a GPU worker names its device, not a count"
    return re.findall(r"device_ids:\s*\n\s*- '?(\w+)'?", devices)


def test_each_gpu_worker_is_pinned_to_its_device_and_needs_cuda(resolved: str) -> None:
    assert _gpu_ids(resolved, "worker") == ["0"]
    assert _gpu_ids(resolved, "audit-worker") == ["0"]
    for service in ("worker", "audit-worker"):
        environment = _subtree(resolved, "services", service, "environment")
        assert "UNLEARN_DEVICE: cuda" in environment
    command = _subtree(resolved, "services", "worker", "command")
    assert "gpu,control" in command and "9101" in command
    with pytest.raises(AssertionError):
        _subtree(resolved, "services", "api", "deploy")  # the API gets no GPU


def test_the_audit_worker_takes_another_gpu_when_told() -> None:
    result = _compose("config", env={**REQUIRED_ENV, "UNLEARN_AUDIT_GPU": "1"})
    assert result.returncode == 0, result.stderr
    assert _gpu_ids(result.stdout, "audit-worker") == ["1"]
    assert _gpu_ids(result.stdout, "worker") == ["0"]


def test_the_documented_way_to_add_a_gpu_worker_works(tmp_path: Path) -> None:
    """The commented example in docker-compose.yml, uncommented into a copy: a third GPU
    worker on device 1 that resolves with its own port and the shared settings."""
    text = COMPOSE_FILE.read_text()
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("  #   worker-gpu1:"))
    example = []
    for line in lines[start:]:
        if not line.startswith("  #   "):
            break
        example.append("  " + line[len("  #   ") :])
    copy = tmp_path / "docker-compose.yml"
    copy.write_text(text.replace("\nservices:\n", "\nservices:\n" + "\n".join(example) + "\n", 1))
    result = _compose("config", file=copy)
    assert result.returncode == 0, result.stderr
    assert _gpu_ids(result.stdout, "worker-gpu1") == ["1"]
    assert "9103" in _subtree(result.stdout, "services", "worker-gpu1", "command")
    assert "UNLEARN_DEVICE: cuda" in _subtree(
        result.stdout, "services", "worker-gpu1", "environment"
    )


def test_roles_without_a_port_have_a_health_check(resolved: str) -> None:
    for service in ("worker", "audit-worker", "callback-worker", "beat"):
        check = _subtree(resolved, "services", service, "healthcheck")
        assert "unlearnd" in check and "healthcheck" in check and "disable" not in check


def test_roles_share_settings_and_wait_for_migrate(resolved: str) -> None:
    for role in UNLEARND_ROLES:
        environment = _subtree(resolved, "services", role, "environment")
        assert "UNLEARN_ENVIRONMENT: production" in environment
        assert "UNLEARN_DATABASE_URL: postgresql+psycopg://" in environment
        assert "UNLEARN_BROKER_URL: redis://redis:6379/0" in environment
        assert "UNLEARN_STATE_DIR: /var/lib/unlearnd" in environment
        assert "UNLEARN_DATA_ROOT: /data" in environment
        assert REQUIRED_ENV["UNLEARN_BOOTSTRAP_ADMIN_KEY"] in environment
        assert REQUIRED_ENV["UNLEARN_AUDIT_SIGNING_KEY"] in environment
        migrate = _subtree(resolved, "services", role, "depends_on", "migrate")
        assert "condition: service_completed_successfully" in migrate
        volumes = _subtree(resolved, "services", role, "volumes")
        assert "unlearnd-state:/var/lib/unlearnd" in volumes
        assert re.search(r"/data:/data:ro\b", volumes)
    assert "unlearnd" in _subtree(resolved, "services", "migrate", "command")
    assert "pg_isready" in _subtree(resolved, "services", "postgres", "healthcheck")


def test_only_the_edge_is_published_and_it_bounds_requests(resolved: str) -> None:
    """The app server is not published: nginx bounds heads, bodies and slow clients in
    front of it, and overwrites X-Forwarded-For, which the API believes from it alone."""
    assert "8000" in _subtree(resolved, "services", "edge", "ports")
    assert "deploy/nginx.conf:/etc/nginx/nginx.conf" in _subtree(
        resolved, "services", "edge", "volumes"
    )
    with pytest.raises(AssertionError):
        _subtree(resolved, "services", "api", "ports")
    environment = _subtree(resolved, "services", "api", "environment")
    assert re.search(r"UNLEARN_FORWARDED_ALLOW_IPS: '?\*'?", environment)
    conf = NGINX_FILE.read_text()
    assert re.search(r"^\s*large_client_header_buffers 4 16k;", conf, flags=re.MULTILINE)
    assert re.search(r"^\s*client_header_timeout 10s;", conf, flags=re.MULTILINE)
    assert re.search(r"^\s*client_body_timeout 30s;", conf, flags=re.MULTILINE)
    assert re.search(r"proxy_set_header X-Forwarded-For \$remote_addr;", conf)
    assert re.search(r"server api:8000;", conf)


def test_prometheus_scrapes_api_and_worker(resolved: str) -> None:
    mounts = _subtree(resolved, "services", "prometheus", "volumes")
    assert "deploy/prometheus.yml:/etc/prometheus/prometheus.yml" in mounts
    assert PROMETHEUS_FILE.is_file()
    scrape = PROMETHEUS_FILE.read_text()
    assert re.search(r"""["']?api:8000["']?""", scrape)
    assert re.search(r"""["']?worker:9101["']?""", scrape)
    # The callback worker's own port: the give-ups' alert reads its attempts.
    assert re.search(r"""["']?callback-worker:9103["']?""", scrape)
    assert "9103" in _subtree(resolved, "services", "callback-worker", "command")


def test_dockerfile_runs_unlearnd_as_non_root() -> None:
    text = DOCKERFILE.read_text()
    users = re.findall(r"^USER\s+(\S+)", text, flags=re.MULTILINE)
    assert users, "the Dockerfile must set a USER"
    assert users[-1].split(":")[0] not in {"root", "0"}
    commands = re.findall(r"^CMD\s+(.+)$", text, flags=re.MULTILINE)
    assert commands and "unlearnd" in commands[-1] and "serve" in commands[-1]
    assert re.search(r"^HEALTHCHECK\b.*(\n.*)*?/healthz", text, flags=re.MULTILINE)
    assert re.search(r"^VOLUME\b.*/var/lib/unlearnd", text, flags=re.MULTILINE)
    assert re.search(r"UNLEARN_DATA_ROOT=/data\b", text)
