"""What a live daemon's ``/metrics`` serves, and PromQL read just enough to check queries by it.

The dashboard (``deploy/grafana``) and the alert rules (``deploy/prometheus``) may name only
series that a real scrape shows: :func:`served` starts a daemon with its HTTP listener against
a scripted upstream and a webhook receiver, lets it poll, change and deliver, and scrapes it.
"""

from __future__ import annotations

import asyncio
import functools
import re
import tempfile
import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.support import WEBHOOK_SECRET, HookReceiver, ScriptedUpstream, make_settings, ok
from tracker.clock import utc_now
from tracker.config import Address
from tracker.demo.serving import catch_all, serve
from tracker.service import open_service
from tracker.web import Metrics, build_app, listening

ORDER = "prdo_metricsmetricsmetrics01"
#: Labels Prometheus adds to every scraped series (``job``, ``instance``), the ones our scrape
#: configuration adds (``role``), and the histogram's bucket bound (``le``).
TARGET_LABELS = frozenset({"job", "instance", "role"})
#: Families whose samples appear only after what they count happened once.
AFTER_WORK = (
    "tracker_polls_total",
    "tracker_upstream_requests_total",
    "tracker_transitions_total",
    "tracker_deliveries_total",
    "tracker_last_successful_poll_timestamp_seconds",
)
#: Seconds the daemon gets to poll twice and deliver once (it takes well under one).
SETTLE = 20.0

#: Sample names by metric name, with their label names.
Served = dict[str, frozenset[str]]


@functools.cache
def served() -> Served:
    """Every sample name a working daemon's ``/metrics`` serves, with its label names."""
    return asyncio.run(_scrape())


async def _scrape() -> Served:
    scripted = ScriptedUpstream()
    scripted.script(ORDER, ok("ordered"), ok("checked"))
    hooks = HookReceiver()
    with tempfile.TemporaryDirectory() as folder:
        async with serve(catch_all(scripted)) as upstream, serve(catch_all(hooks)) as receiver:
            sink = {"name": "ops", "type": "webhook", "url": receiver.url, "on": ["*"]}
            settings = make_settings(
                Path(folder),
                upstream.url,
                polling={"interval": 0.2, "jitter": 0},
                sinks=[sink | {"secret": WEBHOOK_SECRET}],
            )
            metrics = Metrics(cache=0)
            async with open_service(settings, telemetry=metrics) as service:
                await service.store.orders.watch([ORDER], source="cli", now=utc_now())
                stop = asyncio.Event()
                daemon = service.daemon()
                running = asyncio.create_task(daemon.run(stop))
                app = build_app(
                    store=service.store,
                    metrics=metrics,
                    readiness=daemon.readiness,
                    sinks=lambda: ["ops"],
                )
                try:
                    async with (
                        listening(app, Address("127.0.0.1", 0)) as url,
                        httpx.AsyncClient(base_url=url, timeout=10) as client,
                    ):
                        return await _after_work(client)
                finally:
                    stop.set()
                    await asyncio.wait_for(running, 20)


async def _after_work(client: httpx.AsyncClient) -> Served:
    """The scrape once every family of :data:`AFTER_WORK` has samples."""
    deadline = time.monotonic() + SETTLE
    while True:
        answer = await client.get("/metrics")
        assert answer.status_code == 200, answer.text
        found: dict[str, set[str]] = {}
        for family in text_string_to_metric_families(answer.text):
            for sample in family.samples:
                found.setdefault(sample.name, set()).update(sample.labels)
        if all(name in found for name in AFTER_WORK):
            return {name: frozenset(labels) for name, labels in found.items()}
        if time.monotonic() > deadline:
            missing = [name for name in AFTER_WORK if name not in found]
            raise AssertionError(f"no samples of {missing} within {SETTLE} s")
        await asyncio.sleep(0.1)


# -- PromQL, read just enough -----------------------------------------------------------------

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_CALL = re.compile(r"\b[a-zA-Z_]\w*\s*\(")
_NAME = re.compile(r"(?<![\w.$])[a-zA-Z_:][\w:]*")
_KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "inf", "nan"}
)
#: ``name{matchers}`` and the label names of the matchers.
SELECTOR = re.compile(r"(?<![\w:])([a-zA-Z_:][\w:]*)\s*\{([^}]*)\}")
MATCHER = re.compile(r"(\w+)\s*(?:=~|!~|!=|=)")
#: ``by (labels)`` and friends: the labels a query groups or matches by.
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")


def metric_names(expr: str) -> set[str]:
    """The metric names ``expr`` selects (functions, keywords and labels left out)."""
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub(" ", _RANGE.sub(" ", _GROUPING.sub(" ", text)))
    text = _CALL.sub(" ", text)
    text = re.sub(r"\b\d[\w.]*", " ", text)  # numbers and durations (5m, 1e3)
    return {name for name in _NAME.findall(text) if name.lower() not in _KEYWORDS}


def unknown_labels(expr: str, served: Served, extra: frozenset[str] = TARGET_LABELS) -> set[str]:
    """Labels ``expr`` matches or groups by that none of its served metrics carries.

    Groupings are checked only where every metric of ``expr`` is served: another's labels
    (``up``, the blackbox exporter's) are not known here.
    """
    names = metric_names(expr)
    allowed = set(extra).union(*(served[name] for name in names if name in served))
    used: set[str] = set()
    for name, matchers in SELECTOR.findall(_STRING.sub('""', expr)):
        if name in served:
            used |= set(MATCHER.findall(matchers))
    if names <= served.keys():
        for grouping in GROUPING.findall(expr):
            used |= {label.strip() for label in grouping.split(",") if label.strip()}
    return used - allowed
