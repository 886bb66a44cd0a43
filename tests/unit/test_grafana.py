"""deploy/grafana/dashboard.json asks only for series a live daemon serves, with their labels."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.served import served
from tests.support import ROOT

DASHBOARD = ROOT / "deploy" / "grafana" / "dashboard.json"
#: The contract's metric families (``CONTRACT.md``, "HTTP: …"): each must have a panel.
CONTRACT = {
    "tracker_polls_total",
    "tracker_upstream_requests_total",
    "tracker_upstream_request_duration_seconds",
    "tracker_transitions_total",
    "tracker_deliveries_total",
    "tracker_outbox_pending",
    "tracker_outbox_oldest_pending_age_seconds",
    "tracker_watched_orders",
    "tracker_last_successful_poll_timestamp_seconds",
}
#: Labels Prometheus adds to every scraped series.
TARGET_LABELS = {"job", "instance"}
METRIC = re.compile(r"\btracker_\w+")
BY = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
SELECTOR = re.compile(r"\b(tracker_\w+)\{([^}]*)\}")
MATCHER = re.compile(r"(\w+)\s*(?:=~|!~|!=|=)")
#: A gauge taken straight into ``max``: every instance reports the same database-wide value.
MAX_OF = re.compile(r"max(?:\s+by\s*\([^)]*\))?\s*\(\s*$")


def family(sample: str) -> str:
    """The contract's name of a sample's family (``_bucket``, ``_sum``, ``_count`` removed)."""
    for suffix in ("_bucket", "_sum", "_count"):
        if sample.endswith(suffix) and sample.removesuffix(suffix) in CONTRACT:
            return sample.removesuffix(suffix)
    return sample


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(Path(DASHBOARD).read_text(encoding="utf-8"))
    return loaded


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel with queries (rows hold none)."""
    return [panel for panel in dashboard["panels"] if panel["type"] != "row"]


def queries(dashboard: dict[str, Any]) -> list[str]:
    """Every PromQL the dashboard runs: panel targets and the template variables' queries."""
    found = [target["expr"] for panel in panels(dashboard) for target in panel["targets"]]
    found += [variable["definition"] for variable in dashboard["templating"]["list"]]
    return found


def test_every_metric_a_query_names_is_served(
    dashboard: dict[str, Any],
) -> None:
    """Every metric the dashboard queries is one a live daemon's /metrics serves."""
    names = served()
    used = {name for expr in queries(dashboard) for name in METRIC.findall(expr)}
    assert used, "no query names a tracker metric"
    unknown = used - names.keys()
    assert not unknown, f"not served: {sorted(unknown)}"


def test_every_contract_metric_has_a_panel(dashboard: dict[str, Any]) -> None:
    """Every metric of the contract has a panel on the dashboard."""
    used = {family(name) for expr in queries(dashboard) for name in METRIC.findall(expr)}
    assert used >= CONTRACT, f"no panel for {sorted(CONTRACT - used)}"


def test_grouping_and_matchers_use_labels_the_metrics_have(dashboard: dict[str, Any]) -> None:
    """Groupings and label matchers use only labels the queried metrics carry."""
    names = served()
    for expr in queries(dashboard):
        labels = set().union(*(names.get(name, set()) for name in METRIC.findall(expr)))
        allowed = labels | TARGET_LABELS
        for grouping in BY.findall(expr):
            grouped = {label.strip() for label in grouping.split(",") if label.strip()}
            assert grouped <= allowed, f"{expr}: no label {sorted(grouped - allowed)}"
        for _name, matchers in SELECTOR.findall(expr):
            matched = set(MATCHER.findall(matchers))
            assert matched <= allowed, f"{expr}: no label {sorted(matched - allowed)}"


def test_database_wide_gauges_are_taken_as_the_max_across_instances(
    dashboard: dict[str, Any],
) -> None:
    """Database-wide gauges are queried as the max across instances, not summed."""
    gauge_names = {
        "tracker_outbox_pending",
        "tracker_outbox_oldest_pending_age_seconds",
        "tracker_watched_orders",
        "tracker_last_successful_poll_timestamp_seconds",
    }
    seen = 0
    for expr in queries(dashboard):
        for found in METRIC.finditer(expr):
            if found[0] in gauge_names:
                seen += 1
                assert MAX_OF.search(expr[: found.start()]), f"{expr}: not max across instances"
    assert seen >= len(gauge_names)


def test_it_imports_into_any_grafana_with_a_prometheus_input(dashboard: dict[str, Any]) -> None:
    """The dashboard imports with one Prometheus input that every panel and target uses."""
    assert dashboard["schemaVersion"] >= 36
    assert [i["name"] for i in dashboard["__inputs"]] == ["DS_PROMETHEUS"]
    assert dashboard["__inputs"][0]["pluginId"] == "prometheus"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    source = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
    for panel in panels(dashboard):
        assert panel["datasource"] == source, panel["title"]
        assert panel["targets"], panel["title"]
        refs = [target["refId"] for target in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        assert all(target["datasource"] == source for target in panel["targets"])
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
