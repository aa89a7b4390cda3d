"""The Grafana dashboard (deploy/grafana/unlearnd.json) and the alerting rules
(deploy/alerts.yml) read only series this service exports (``service.metrics``), so no
panel stays empty and no alert stays silent for a misspelt or vanished name; and the
dashboard has the panels docs/operations.md lists."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "unlearnd.json"
ALERTS = ROOT / "deploy" / "alerts.yml"
PROMQL_WORDS = {"by", "without", "on", "ignoring", "and", "or", "unless", "bool", "offset"}


def _exprs() -> list[str]:
    found: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("expr"), str):
                found.append(node["expr"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(json.loads(DASHBOARD.read_text()))
    return found


def series_names(expr: str) -> set[str]:
    """The series a PromQL expression reads: its identifiers, less functions, keywords,
    label matchers, grouping labels and ranges."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    names = re.findall(r"(?<![\w.])([a-zA-Z_:][\w:]*)\b(?!\s*\()", text)
    return {name for name in names if name not in PROMQL_WORDS}


def exported(text: str) -> set[str]:
    """Series names in a Prometheus exposition, histogram and counter parts included."""
    names: set[str] = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, flags=re.MULTILINE):
        names.add(name)
        if kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return names


def test_the_name_finder_reads_promql() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le, stage) (rate(a_bucket{job="x", s=~"5.."}[1h])))'
        " / on (queue) max by (queue) (b) > 0 and c"
    )
    assert series_names(expr) == {"a_bucket", "b", "c"}


def _alert_exprs() -> list[str]:
    """The ``expr`` of every rule: one line, or a ``|`` block of deeper-indented lines."""
    found = []
    lines = ALERTS.read_text().splitlines()
    for index, line in enumerate(lines):
        match = re.match(r"^(\s*)expr:\s*(.*)$", line)
        if not match:
            continue
        indent, value = len(match.group(1)), match.group(2).strip()
        if value not in ("|", ">", "|-", ">-"):
            found.append(value)
            continue
        block = []
        for following in lines[index + 1 :]:
            if following.strip() and len(following) - len(following.lstrip()) <= indent:
                break
            block.append(following.strip())
        found.append(" ".join(block))
    return found


def _available() -> set[str]:
    from service import metrics

    # An open scrape and one with the metrics token (per-model series) export different sets;
    # `up` is Prometheus's own.
    available = {"up"}
    for per_model in (False, True):
        available |= exported(metrics.exposition(per_model=per_model).decode())
    return available


def test_every_series_the_dashboard_reads_is_exported(sqlite_env) -> None:
    read = set().union(*(series_names(expr) for expr in _exprs()))
    assert read, "no queries found"
    assert read - _available() == set(), f"not exported: {sorted(read - _available())}"


def test_every_series_the_alerts_read_is_exported(sqlite_env) -> None:
    exprs = _alert_exprs()
    assert len(exprs) == len(re.findall(r"^\s*- alert:", ALERTS.read_text(), re.MULTILINE))
    read = set().union(*(series_names(expr) for expr in exprs))
    assert read - _available() == set(), f"not exported: {sorted(read - _available())}"


def test_the_panels_cover_what_operations_watch() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "unlearnd"
    read = set().union(*(series_names(expr) for expr in _exprs()))
    for needed in (
        "http_requests_total",  # requests by status
        "unlearn_requests",
        "unlearn_oldest_pending_request_age_seconds",  # deadlines
        "unlearn_model_pending_requests",  # backlog per model
        "unlearn_job_stage_seconds_bucket",  # job durations by stage
        "unlearn_head_audit_verdicts",  # audit verdicts
        "unlearn_callback_deliveries",  # callbacks
        "unlearn_queue_workers",
    ):
        assert needed in read, needed
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
